"""``topx data``: make the synthetic data set or fetch a public one.

``topx data synth --out DIR`` writes the embedded default data set (MovieLens-100k layout);
``topx data download ml-100k`` fetches, verifies and unpacks a GroupLens archive.
"""

from __future__ import annotations

import argparse

from batch.cli.common import add_config_options, config_from_args

DATASETS = ("ml-100k", "ml-1m")


def register(subparsers: argparse._SubParsersAction) -> None:
    group = subparsers.add_parser("data", help="make the synthetic data set or download MovieLens",
                                  description="Make the synthetic data set or download MovieLens.")
    commands = group.add_subparsers(dest="data_command", metavar="SUBCOMMAND", required=True)
    _register_synth(commands)
    _register_download(commands)


def _register_synth(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "synth", help="write a synthetic data set in the MovieLens-100k layout",
        description="Write a synthetic data set with planted tastes in the MovieLens-100k layout "
                    "(u.data, ua.base/ua.test, u.user, u.item, ...). Sizes default to "
                    "[data.synth] in the config (943 users, 1682 items, 100000 interactions).")
    parser.add_argument("--out", required=True, metavar="DIR", help="directory to write")
    for name in ("users", "items", "interactions", "seed"):
        # Same destinations as the config keys data.synth.*, so TOML and TOPX_* also apply.
        parser.add_argument(f"--{name}", dest=f"cfg_data__synth__{name}", type=int, default=None,
                            metavar="N")
    add_config_options(parser, "--holdout")
    parser.set_defaults(handler=_synth)


def _register_download(commands: argparse._SubParsersAction) -> None:
    parser = commands.add_parser(
        "download", help="fetch a MovieLens data set from GroupLens",
        description="Fetch <url>/<dataset>.zip, verify its pinned SHA-256 and unpack it safely "
                    "to <out>/<dataset>/. Skips the download when that folder is already there "
                    "and intact.")
    parser.add_argument("dataset", choices=DATASETS)
    parser.add_argument("--out", default=".", metavar="DIR", help="parent directory (default: .)")
    parser.add_argument("--url", default=None, metavar="URL",
                        help="base URL holding <dataset>.zip (default: the GroupLens site)")
    parser.add_argument("--timeout", type=float, default=60.0, metavar="SECONDS",
                        help="network timeout per read (default: 60)")
    parser.set_defaults(handler=_download)


def _synth(args: argparse.Namespace) -> dict:
    from batch.data import synth

    config = config_from_args(args).data
    size = config.synth
    result = synth.generate(args.out, users=size.users, items=size.items,
                            interactions=size.interactions, seed=size.seed, holdout=config.holdout)
    return {"command": "data synth", **result}


def _download(args: argparse.Namespace) -> dict:
    from batch.data import download

    base_url = args.url or download.BASE_URL
    result = download.download(args.dataset, args.out, base_url=base_url, timeout=args.timeout)
    return {"command": "data download", **result}
