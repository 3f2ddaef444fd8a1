"""``asr-kd validate | prepare | synth``: the data layer's commands.

They print their results (the report, the manifests written); progress and what was skipped
are logged by the library (:mod:`asr_kd.logs`, set up by :func:`asr_kd.cli.main`).

Example
-------
    asr-kd synth data/synth --preset demo
    asr-kd prepare folder my_recordings/ data/mine --valid 0.1 --test 0.1
    asr-kd validate data/mine/train.csv
"""

from __future__ import annotations

import argparse
import sys

from ..errors import UserError, describe_os_error
from ..io import read_json


def _range(text: str) -> tuple[float, float]:
    try:
        lo, _, hi = text.partition(":")
        return (float(lo), float(hi or lo))
    except ValueError as err:
        raise argparse.ArgumentTypeError(f"expected LOW:HIGH, e.g. 10:30, got {text!r}") from err


def register(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("validate", help="check every row of a manifest and report every problem with its fix")
    p.add_argument("manifest", nargs="+", help="CSV or JSONL manifest(s)")
    p.add_argument("--data-root", help="replaces $data_root in wav paths (default: the manifest's folder)")
    p.add_argument(
        "--tokenizer",
        help="a tokenizer saved by asr-kd (folder, .model or .chars.json) or a trained model (its tokenizer); "
        "its characters are checked",
    )
    p.add_argument("--no-audio", action="store_true", help="do not open the audio files (fast, checks less)")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=validate)

    p = sub.add_parser("prepare", help="make manifests from a corpus (librispeech, commonvoice, folder, csv, jsonl)")
    p.add_argument("kind", choices=["librispeech", "commonvoice", "folder", "csv", "jsonl"])
    p.add_argument("src", help="corpus folder (csv/jsonl: the manifest to convert)")
    p.add_argument("out", help="output folder (csv/jsonl: a folder or a .csv/.jsonl file)")
    p.add_argument(
        "--map", dest="mapping", help="csv/jsonl: column mapping OURS=THEIRS, e.g. wrd=sentence,wav=path,spk_id=speaker"
    )
    p.add_argument(
        "--valid", type=float, default=0.0, help="folder: share of speakers for a valid split (speaker-disjoint)"
    )
    p.add_argument(
        "--test", type=float, default=0.0, help="folder: share of speakers for a test split (speaker-disjoint)"
    )
    p.add_argument("--seed", type=int, default=0, help="folder: seed of the speaker split")
    p.add_argument(
        "--speaker-depth",
        type=int,
        default=1,
        metavar="N",
        help="folder: the speaker is named by the first N folders below SRC (default 1; 0: one speaker)",
    )
    p.add_argument(
        "--no-normalise",
        action="store_true",
        help="keep transcripts as they are (default: upper case, no punctuation, digits spelled)",
    )
    p.add_argument("--force", action="store_true", help="redo even if done before with the same options")
    p.set_defaults(func=prepare)

    p = sub.add_parser(
        "synth",
        help="synthesise the embedded English speech corpus with espeak-ng (plus flite/festival voices when installed)",
    )
    p.add_argument("out", help="output folder")
    p.add_argument("--preset", default="demo", choices=["tiny", "demo", "full"], help="corpus size (default: demo)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--text", help="speak the lines of this UTF-8 file instead of generated sentences")
    p.add_argument(
        "--utterances", type=int, nargs=3, metavar=("TRAIN", "VALID", "TEST"), help="override the preset's counts"
    )
    p.add_argument(
        "--noise", type=float, default=0.0, metavar="P", help="share of utterances with additive noise (0-1)"
    )
    p.add_argument(
        "--snr", type=_range, default=(10.0, 30.0), metavar="LOW:HIGH", help="noise SNR range in dB (default 10:30)"
    )
    p.add_argument(
        "--reverb", type=float, default=0.0, metavar="P", help="share of utterances with reverberation (0-1)"
    )
    p.add_argument("--rt60", type=_range, default=(0.15, 0.6), metavar="LOW:HIGH", help="reverberation time range in s")
    p.add_argument("--jobs", type=int, default=None, help="worker processes (default: all cores)")
    p.add_argument(
        "--transfer",
        type=int,
        default=0,
        metavar="N",
        help="also N utterances in transfer.csv (training voices, other sentences): a transfer set for distillation",
    )
    p.add_argument(
        "--extra-voices",
        choices=["auto", "yes", "no"],
        default=None,
        help="flite and festival voices: auto (default) adds those installed; yes requires them; "
        "no: espeak-ng only, so a seed gives the same corpus on every machine",
    )
    p.add_argument("--flite", action="store_true", help="deprecated: same as --extra-voices yes")
    p.add_argument("--force", action="store_true", help="remake even if complete")
    p.set_defaults(func=synth)


def validate(args: argparse.Namespace) -> int:
    from ..data.validate import validate_manifest

    tok = None
    if args.tokenizer:
        from pathlib import Path

        from ..data.tokenizer import load_tokenizer

        given = Path(args.tokenizer)
        bundle = given / "model.pt" if given.is_dir() else given
        if bundle.name == "model.pt" and bundle.exists():  # a trained model carries its tokenizer
            from ..models.bundle import load_bundle

            tok = load_bundle(bundle).tokenizer()
        else:
            try:
                tok = load_tokenizer(args.tokenizer)
            except (OSError, ValueError) as err:
                raise UserError(
                    f"{err}; give a tokenizer folder (holds tokenizer.json), its .model / "
                    ".chars.json file, or a trained model's folder"
                ) from err
    progress = None
    if not args.quiet:
        from tqdm import tqdm

        progress = tqdm
    status = 0
    for path in args.manifest:
        report = validate_manifest(
            path, tokenizer=tok, data_root=args.data_root, check_audio=not args.no_audio, progress=progress
        )
        print(report.format())
        if not report.ok:
            status = 1
    return status


def prepare(args: argparse.Namespace) -> int:
    from ..data.prepare import PrepareError, parse_mapping
    from ..data.prepare import prepare as run_prepare

    try:
        options: dict[str, object] = {"normalise": not args.no_normalise}
        if args.kind in ("csv", "jsonl"):
            options["mapping"] = parse_mapping(args.mapping)
        if args.kind == "folder":
            options.update(valid=args.valid, test=args.test, seed=args.seed, speaker_depth=args.speaker_depth)
        result = run_prepare(args.kind, args.src, args.out, force=args.force, **options)
    except PrepareError as err:
        raise UserError(str(err)) from err
    except OSError as err:
        raise UserError(describe_os_error(err) if err.filename else f"{args.out}: {describe_os_error(err)}") from err
    for name, path in result.items():
        print(f"{name}: {path}")
    print(f"next: asr-kd validate {' '.join(str(p) for p in result.values())}", file=sys.stderr)
    return 0


def synth(args: argparse.Namespace) -> int:
    from pathlib import Path

    from ..data.espeak import EspeakError
    from ..data.festival import APT_FESTIVAL, APT_VOICES, FestivalError
    from ..data.flite import APT_FLITE, FliteError
    from ..data.synth import extra_voices_used, synthesize_corpus

    extra = args.extra_voices or "auto"
    if args.flite:
        if args.extra_voices not in (None, "yes"):
            raise UserError(
                f"--flite (deprecated) means --extra-voices yes; it contradicts --extra-voices {args.extra_voices}"
            )
        print("asr-kd synth: --flite is deprecated; use --extra-voices yes (or auto, the default)", file=sys.stderr)
        extra = "yes"

    for name, (lo, hi) in (("--snr", args.snr), ("--rt60", args.rt60)):
        if lo > hi:
            raise UserError(f"{name}: LOW {lo} is above HIGH {hi}")
    for name, v in (("--noise", args.noise), ("--reverb", args.reverb)):
        if not 0.0 <= v <= 1.0:
            raise UserError(f"{name} is a share of utterances between 0 and 1, got {v}")
    try:
        result = synthesize_corpus(
            args.out,
            preset=args.preset,
            seed=args.seed,
            text_file=args.text,
            utterances=args.utterances,
            noise_prob=args.noise,
            snr_db=args.snr,
            reverb_prob=args.reverb,
            rt60=args.rt60,
            jobs=args.jobs,
            force=args.force,
            extra_voices={"yes": True, "no": False}.get(extra, extra),
            transfer=args.transfer,
        )
    except (ValueError, EspeakError, FliteError, FestivalError) as err:
        raise UserError(str(err)) from err
    except OSError as err:
        raise UserError(describe_os_error(err) if err.filename else f"{args.out}: {describe_os_error(err)}") from err
    for split, path in result.items():
        print(f"{split}: {path}")
    options = read_json(Path(args.out) / "synth.json")["options"]
    used = extra_voices_used(options)
    picked = [f"{v} ({split})" for split, vs in used.items() for v in vs]
    unpicked = sorted(set(options.get("extra_voices", [])) - {v for vs in used.values() for v in vs})
    if picked:
        print(f"extra voices used: {', '.join(picked)}")
    if unpicked:
        print(f"extra voices installed but not picked for this preset: {', '.join(unpicked)}")
    if extra == "no":
        print("extra voices: none (--extra-voices no: espeak-ng only)")
    elif not options.get("extra_voices"):
        print(
            f"extra voices: none installed (apt-get install {APT_FLITE} {APT_FESTIVAL} {APT_VOICES} adds "
            "7 English voices)"
        )
    return 0
