"""One inference path: a model or an ensemble to log-posteriors, and the decoder factory.

The recipe's ensemble and score stages and the CLI's ``evaluate`` / ``transcribe`` all go
through here, so an ensemble decodes the same way everywhere, with its combination method
and weights. A :class:`System` is one bundle or several; :func:`load_system` reads
comma-separated bundles or an ensemble folder of an experiment (``ensemble.json``, written
by the ensemble stage). :func:`make_decoder` builds greedy or beam decoding (lexicon, n-gram
LM) from :class:`~asr_kd.asr.settings.BeamSettings`, whose defaults are the toolkit's.

Example
-------
>>> import torch
>>> from asr_kd.data.features import GlobalCMVN, FeatureNorm
>>> from asr_kd.models.acoustic import AcousticConfig, CTCAcousticModel
>>> from asr_kd.models.bundle import LoadedModel
>>> torch.manual_seed(0) and None
>>> members = [LoadedModel(CTCAcousticModel(AcousticConfig(num_classes=6, n_mels=8, hidden=4, conv_channels=2)),
...                        FeatureNorm(GlobalCMVN(8), augment=None), {}, {}) for _ in range(2)]
>>> geo = System(members, method="geometric")
>>> lp, n = geo.log_probs(torch.randn(2, 40, 8), torch.tensor([40, 20]))
>>> lp.shape, n.tolist(), bool(torch.allclose(lp.exp().sum(-1), torch.ones(2, 10)))
(torch.Size([2, 10, 6]), [10, 5], True)
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import Tensor, nn

from asr_kd.asr.data import padded_batches
from asr_kd.asr.decode import BeamDecoder, greedy_decode
from asr_kd.asr.settings import BeamSettings
from asr_kd.distill import combine
from asr_kd.distill.specialists import active_specialists, combine_specialists, raise_dustbin
from asr_kd.errors import UserError
from asr_kd.io import read_json, write_json
from asr_kd.models.bundle import LoadedModel
from asr_kd.models.export import ExportedModel, load_model

log = logging.getLogger(__name__)

Decoder = Callable[[Tensor, Tensor], list[str]]


@torch.no_grad()
def ensemble_log_probs(
    members: Sequence[nn.Module],
    feats: Tensor,
    lengths: Tensor,
    method: str = "arithmetic",
    weights: Sequence[float] | None = None,
) -> tuple[Tensor, Tensor]:
    """Members' combined ``(batch, frames, classes)`` log-probabilities and frame counts.

    Every member must produce the same frames (one front end, one subsampling).
    """
    outputs: list[Tensor] = []
    out_lengths: Tensor | None = None
    for i, model in enumerate(members):
        model.eval()
        logits, n = model(feats, lengths)
        if out_lengths is not None and not torch.equal(n, out_lengths):
            raise ValueError(f"ensemble member {i} produced other frame counts than member 0")
        outputs.append(logits)
        out_lengths = n
    assert out_lengths is not None, "an ensemble needs at least one member"
    out_lengths = out_lengths.to(feats.device)
    mask = torch.arange(outputs[0].shape[1], device=feats.device)[None, :] < out_lengths[:, None]
    return combine(outputs, method=method, weights=weights, mask=mask), out_lengths


class _Member(nn.Module):
    """A loaded bundle as ``(raw feats, frames) -> (log-probs, out frames)``."""

    def __init__(self, loaded: LoadedModel | ExportedModel) -> None:
        super().__init__()
        self.loaded = loaded

    def forward(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        return self.loaded.log_probs(feats, frames)


@dataclass
class System:
    """One model, or an ensemble of models of one recipe, that maps features to log-posteriors."""

    members: list[LoadedModel | ExportedModel]
    method: str = "arithmetic"
    weights: Sequence[float] | None = None

    def __post_init__(self) -> None:
        self._nets = [_Member(m) for m in self.members]

    @torch.no_grad()
    def log_probs(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        """Raw log-Mel features ``(B, T, D)`` -> ``(B, T / 4, classes)`` log-posteriors and frames."""
        if len(self._nets) == 1:
            return self._nets[0](feats, frames)
        return ensemble_log_probs(self._nets, feats, frames, method=self.method, weights=self.weights)

    def batches(
        self, feats: Mapping[str, Tensor], ids: Sequence[str] | None = None, batch_size: int = 32, device: str = "cpu"
    ) -> Iterator[tuple[list[str], Tensor, Tensor]]:
        """``(ids, log_probs, frames)`` over stored features, in length-sorted batches."""
        for chunk, x, n in padded_batches(feats, list(feats) if ids is None else list(ids), batch_size):
            lp, out_n = self.log_probs(x.to(device), n.to(device))
            yield chunk, lp, out_n

    @property
    def parameters(self) -> int:
        return sum(m.parameters for m in self.members)

    def tokenizer(self):
        return self.members[0].tokenizer()

    def feature_config(self):
        """The front end the members were trained with (their bundles' fingerprint)."""
        from asr_kd.data.features import FeatureConfig

        stored = self.members[0].info.get("fingerprint", {}).get("features", {})
        return FeatureConfig(**{k: v for k, v in stored.items() if k != "features"})


class SpecialistSystem(System):
    """The generalist and its specialists as one system: per frame, the KL-minimising combination.

    ``members`` are the generalist, then the specialists (``|subset| + 2`` outputs each);
    ``shifts``: each specialist's dustbin-logit increment (its sampling's correction; None: 0).
    """

    def __init__(
        self,
        members: Sequence[LoadedModel | ExportedModel],
        subsets: Sequence[Sequence[int]],
        top_n: int,
        steps: int,
        lr: float,
        shifts: Sequence[float] | None = None,
    ) -> None:
        super().__init__(list(members))
        self.subsets = [list(s) for s in subsets]
        self.top_n, self.steps, self.lr = int(top_n), int(steps), float(lr)
        self.shifts = [float(x) for x in shifts] if shifts is not None else [0.0] * len(self.subsets)

    def _specialists(self, feats: Tensor, frames: Tensor) -> list[Tensor]:
        """Each specialist's log-probabilities, its dustbin logit raised by its shift."""
        outs = [net(feats, frames)[0] for net in self._nets[1:]]
        return [o if not x else raise_dustbin(o, x).log_softmax(-1) for o, x in zip(outs, self.shifts, strict=True)]

    @torch.no_grad()
    def log_probs(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor]:
        _, combined, _, n = self.parts(feats, frames)
        return combined, n

    @torch.no_grad()
    def specialist_choices(self, feats: Tensor, frames: Tensor) -> Tensor:
        """Each specialist's argmax per frame as a class of the full vocabulary, ``(B, T, M)``:
        blank 0, a piece of its subset, or -1 for its dustbin."""
        picks = []
        for out, subset in zip(self._specialists(feats, frames), self.subsets, strict=True):
            ids = torch.tensor([0, *subset, -1], device=feats.device)
            picks.append(ids[out.argmax(-1)])
        return torch.stack(picks, -1)

    @torch.no_grad()
    def parts(self, feats: Tensor, frames: Tensor) -> tuple[Tensor, Tensor, Tensor, Tensor]:
        """``(generalist log-probs, combination log-probs, active (B, T, M) bool, frames)``."""
        lp_g, n = self._nets[0](feats, frames)
        outs = self._specialists(feats, frames)
        valid = torch.arange(lp_g.shape[1], device=n.device)[None, :] < n[:, None]
        flat_g = lp_g[valid]
        active = active_specialists(flat_g, self.subsets, self.top_n)
        rows = active.any(1)
        if rows.any():
            with torch.enable_grad():
                q = combine_specialists(
                    flat_g[rows],
                    [o[valid][rows] for o in outs],
                    [[0, *s] for s in self.subsets],  # a specialist's classes: blank, its subset
                    active[rows],
                    self.steps,
                    self.lr,
                )
            flat_g = flat_g.clone()
            flat_g[rows] = q.to(flat_g.dtype)
        out = lp_g.clone()
        out[valid] = flat_g
        active_all = torch.zeros(*lp_g.shape[:2], len(self.subsets), dtype=torch.bool, device=active.device)
        active_all[valid] = active
        return lp_g, out, active_all, n


def write_ensemble(
    folder: str | os.PathLike, members: Sequence[str | os.PathLike], method: str, weights: Sequence[float] | None
) -> None:
    """Describe an ensemble in ``folder/ensemble.json`` (member bundles relative to the folder)."""
    folder = Path(folder)
    rel = [os.path.relpath(Path(m), folder) for m in members]
    write_json(
        folder / "ensemble.json",
        {"members": rel, "method": method, "weights": list(weights) if weights is not None else None},
    )


def load_system(
    spec: str | os.PathLike, device: str = "cpu", method: str | None = None, weights: Sequence[float] | None = None
) -> System:
    """A bundle, comma-separated bundles (an ensemble), an ensemble folder (``ensemble.json``) or
    a specialists folder (``specialists.json``: a generalist and its specialists, combined);
    a bundle may also be an exported model (``.onnx``, ``.ts``: :mod:`asr_kd.models.export`).

    ``method`` / ``weights`` combine comma-separated bundles (default arithmetic, equal); an
    ensemble folder brings its own, which they may override.
    """
    spec = str(spec)
    special = Path(spec) / "specialists.json"  # a generalist + specialists (asr_kd.asr.specialists)
    if "," not in spec and special.exists():
        d = read_json(special)
        members = [load_model(str((Path(spec) / m).resolve()), device=device) for m in d["members"]]
        return SpecialistSystem(members, d["subsets"], d["top_n"], d["steps"], d["lr"], d.get("dustbin_shifts"))
    described = Path(spec) / "ensemble.json"
    if "," not in spec and described.exists():
        d = read_json(described)
        paths = [str((Path(spec) / m).resolve()) for m in d["members"]]
        method = method or d["method"]
        weights = weights if weights is not None else d.get("weights")
    else:
        paths = spec.split(",")
    method = method or "arithmetic"
    if weights is not None and len(weights) != len(paths):
        raise UserError(f"{len(weights)} ensemble weights for {len(paths)} models; give one weight per model")
    models = [load_model(p, device=device) for p in paths]  # BundleError names a wrong path
    base = models[0].info.get("fingerprint", {})
    for path, m in zip(paths, models, strict=False):
        if m.info.get("fingerprint", {}) != base:
            raise UserError(
                f"{path}: made with another front end or tokenizer than {paths[0]}; "
                "an ensemble needs models of one recipe"
            )
    return System(models, method=method, weights=weights)


def write_lm(texts: Sequence[str], tokenizer, folder: str | os.PathLike, lm_order: int) -> tuple[str, str | None]:
    """A lexicon of the words of ``texts`` and their ``lm_order``-gram LM (0: none) in ``folder``."""
    from asr_kd.asr.lm import write_arpa, write_lexicon

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    lexicon = folder / "lexicon.txt"
    words = write_lexicon(texts, tokenizer, lexicon)
    lm = None
    if lm_order > 0:
        write_arpa(texts, folder / "lm.arpa", order=lm_order)
        lm = str(folder / "lm.arpa")
    log.info(
        f"  beam search: {words} words in the lexicon, "
        + (f"{lm_order}-gram LM" if lm else "no LM")
        + " from the training transcripts"
    )
    return str(lexicon), lm


def make_decoder(
    tokenizer, beam: BeamSettings = BeamSettings(size=0), lexicon: str | None = None, lm: str | None = None
) -> Decoder:
    """``(log_probs, frames) -> texts``: greedy when ``beam.size`` is 0, else beam search
    (torchaudio's ctc_decoder) restricted to ``lexicon``'s words and scored by ``lm`` when given."""
    if not beam.size:
        return lambda lp, n: [tokenizer.decode(h) for h in greedy_decode(lp, n)]
    from asr_kd.asr.lm import decoder_tokens

    for path in (lexicon, lm):
        if path and not Path(path).exists():
            raise UserError(f"no such file: {path}")
    decoder = BeamDecoder(
        decoder_tokens(tokenizer),
        beam_size=int(beam.size),
        lexicon=lexicon,
        lm=lm,
        lm_weight=float(beam.lm_weight),
        word_score=float(beam.word_score),
    )
    if lexicon:
        return decoder.words
    return lambda lp, n: [tokenizer.decode(h) for h in decoder(lp, n)]
