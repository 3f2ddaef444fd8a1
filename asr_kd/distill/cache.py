"""Teacher-output cache: top-k log-probabilities per ID, in shards, fingerprinted.

Layout of a cache directory::

    meta.json          format, k, num_classes, fingerprint, complete flag
    shard-00000.pt     one torch file per shard, written under a temporary name then renamed
    shard-00001.pt
    writer.lock        held by the one writer at work

A shard holds many items (utterances or samples), each keyed by its **ID**
(never a batch index): the item's ``(frames, k)`` float16 log-probabilities
at temperature 1, their ``(frames, k)`` class indices (int16 when the classes
fit, else int32), concatenated, with per-ID offsets. Shards are read with
``torch.load(mmap=True)``, so random access by ID touches only the pages
of that item and the whole cache never has to fit in memory.

Safety:

- ``fingerprint``: a dict of whatever produced the outputs (features,
  subsampling, tokenizer, teacher checkpoints ...). It is stored in meta.json
  and compared on read and on resume; a mismatch is refused with an error that
  names each differing field.
- A shard only exists under its final name once completely written
  (a temporary file renamed into place). A writer killed mid-shard leaves a
  ``.tmp`` file that the next writer deletes; the items in it are redone.
- ``meta.json`` says ``complete: true`` only after :meth:`CacheWriter.close`
  with ``complete=True``; a reader refuses an incomplete cache (pass
  ``allow_incomplete=True`` to read the finished shards anyway).

The code is in three modules: :mod:`.cache_format` (file names, meta.json, shard
files, the fingerprint check), :mod:`.cache_writer` (:class:`CacheWriter`) and
:mod:`.cache_reader` (:class:`TeacherCache`); this module gathers their public names.

Example
-------
>>> import tempfile, torch
>>> root = tempfile.mkdtemp()
>>> with CacheWriter(root, num_classes=10, k=3, fingerprint={"n_mels": 80}) as w:
...     w.add("utt1", torch.randn(7, 10))   # dense logits or log-probs, or a TopK
...     w.add("utt2", torch.randn(4, 10))
>>> cache = TeacherCache(root, fingerprint={"n_mels": 80})   # required: refused if it differs
>>> cache["utt1"].log_probs.shape, cache["utt1"].indices.dtype
(torch.Size([7, 3]), torch.int64)
>>> sorted(cache.ids())
['utt1', 'utt2']
>>> cache.bytes_per_frame()
12.0
"""

from .cache_format import FORMAT, LOCK, META, CacheError
from .cache_join import join_parts, part_dir
from .cache_reader import TeacherCache
from .cache_writer import CacheWriter

__all__ = ["FORMAT", "LOCK", "META", "CacheError", "CacheWriter", "TeacherCache", "join_parts", "part_dir"]
