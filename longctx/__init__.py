"""longctx: does a Transformer-XL memory keep a long conversation coherent, and at what cost?"""

__version__ = "0.1.0"
