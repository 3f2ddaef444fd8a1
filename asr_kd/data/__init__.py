"""The data layer: manifests, validation, corpus preparers, the synthetic corpus, audio, features, tokenizers.

Modules (each does one thing; imports only go down this list's dependencies, never round):

- :mod:`~asr_kd.data.manifest_io`: read/write ``ID,duration,wav,spk_id,wrd`` manifests (CSV or JSONL), no checks.
- :mod:`~asr_kd.data.validate`: check every row, report every problem with its row and a fix.
- :mod:`~asr_kd.data.manifest`: ``load_manifest(path, skip_bad=False)`` for training (read + validate);
  re-exports the names of ``manifest_io``.
- :mod:`~asr_kd.data.prepare`: LibriSpeech, Common Voice, a folder of audio + .txt, CSV/JSONL with a
  mapping; the readers of each source are in :mod:`~asr_kd.data.prepare_corpora` and
  :mod:`~asr_kd.data.prepare_tables`, what they share in :mod:`~asr_kd.data.prepare_common`.
- :mod:`~asr_kd.data.synth`: the embedded English corpus (espeak-ng, plus the flite and festival
  voices installed, unless ``extra_voices=False``); :mod:`~asr_kd.data.synth_voices` picks the
  speakers of each split, :mod:`~asr_kd.data.synth_render` renders one utterance,
  :mod:`~asr_kd.data.sentences` writes its text, :mod:`~asr_kd.data.espeak` /
  :mod:`~asr_kd.data.flite` / :mod:`~asr_kd.data.festival` speak it.
- :mod:`~asr_kd.data.text`: transcript normalisation.
- :mod:`~asr_kd.data.audio`: audio I/O (16 kHz mono on load, atomic writes).
- :mod:`~asr_kd.data.tokenizer`: sentencepiece (unigram/BPE) or characters; id 0 is the CTC blank.
- :mod:`~asr_kd.data.features`: 80-dim log-Mel filterbanks, global CMVN (``cmvn_from_features``),
  ``FeatureNorm`` (normalise, zero the padding, SpecAugment), SpecAugment.

Progress and skipped items are logged (``logging.getLogger(__name__)``); nothing here prints.
"""
