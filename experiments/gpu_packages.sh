# Shared by experiments/gpu_wheels.sh and experiments/gpu_setup.sh (sourced, not run).
# The distributions a bare GPU machine (jax, flax, optax, orbax-checkpoint, transformers and
# tokenizers installed) lacks for longctx: what longctx imports beyond that stack and their
# dependencies.
GPU_WHEELS=(
    tensorflow-datasets tensorflow-metadata googleapis-common-protos array_record dm-tree
    immutabledict promise six termcolor toml wrapt attrs simple-parsing docstring_parser
    requests urllib3 certifi charset-normalizer tensorboardX einops
    matplotlib contourpy cycler fonttools kiwisolver pillow pyparsing
    python-dateutil tzdata
)
# The modules the pipeline imports from them (data build, train, evaluate, compare, chat).
GPU_IMPORTS=(tensorflow_datasets array_record tree promise tensorboardX matplotlib immutabledict)
