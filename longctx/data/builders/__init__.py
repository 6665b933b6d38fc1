"""TFDS builders of the dialogue datasets, by `DataConfig.name`."""

from __future__ import annotations

from longctx.data.builders.base import DialogueBuilder


def builder_class(name: str) -> type[DialogueBuilder]:
    """The builder of dataset `name` ('synthetic', 'msc' or 'qmsum')."""
    from longctx.data.builders.msc import MscDialogues
    from longctx.data.builders.qmsum import QmsumMeetings
    from longctx.data.builders.synthetic import SyntheticDialogues

    builders = {"synthetic": SyntheticDialogues, "msc": MscDialogues, "qmsum": QmsumMeetings}
    if name not in builders:
        from longctx.errors import UserError

        raise UserError(f"unknown dataset '{name}' (known: {', '.join(builders)})")
    return builders[name]
