"""The built-in transforms, registered through the ``meshconnect`` entry point ``transforms``.

They use the ``meshconnect_transforms`` hook, the same door a third-party transform uses. The
transforms themselves live in modules by concept, each with its options models, factories and
:class:`~meshconnect.api.TransformSpec` list (``SPECS``):

* :mod:`.fields`: ``insert_field``, ``replace_field``, ``drop_fields``
* :mod:`.structure`: ``flatten``, ``unflatten``, ``extract_field``, ``hoist_field``,
  ``template``
* :mod:`.masking`: ``mask`` (redact, hash, encrypt, decrypt)
* :mod:`.convert`: ``cast``, ``timestamp_convert``
* :mod:`.routing`: ``filter``, ``route``, ``set_key``, ``set_attributes``
* :mod:`.schema`: ``validate``

Each options model holds every key of its YAML step besides ``type`` and ``when`` (which the
chain handles); each factory is ``factory(options, compiler) -> Transform``. Every ``apply``
checks what can fail before it changes anything, so a record that raises
:class:`~meshconnect.errors.DataError` goes to the dead-letter topic as it came in.
"""

from __future__ import annotations

from ..api import TransformSpec
from ..hookspecs import hookimpl
from . import convert, fields, masking, routing, schema, structure

__all__ = ["meshconnect_transforms"]


@hookimpl
def meshconnect_transforms() -> list[TransformSpec]:
    """The built-in transforms."""
    return [
        *routing.SPECS,
        *fields.SPECS,
        *masking.SPECS,
        *structure.SPECS,
        *convert.SPECS,
        *schema.SPECS,
    ]
