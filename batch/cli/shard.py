"""``topx shard`` and ``topx finalize``: the shard jobs and the final job of a sharded run
(``topx run --shards N``); see :mod:`batch.shards`.

Both start from the run's own settings (saved in its run directory) and take only where to work
and publish from their options, config file and ``TOPX_*`` environment, so an AWS Batch array
job passes nothing but the run id: ``TOPX_RUN_ID``, ``TOPX_SHARD_COUNT`` and the
``AWS_BATCH_JOB_ARRAY_INDEX`` Batch sets stand in for the options.
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from batch.cli.common import add_config_options, config_from_args
from batch.config import JobConfig
from batch.errors import ConfigError
from batch.shardplan import RUN_ID_ENV, SHARD_COUNT_ENV

ARRAY_INDEX_ENV = "AWS_BATCH_JOB_ARRAY_INDEX"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "shard", help="compute and load one shard's lists into a sharded run",
        description="Search the lists of the users u with u % N == I of run R (started by topx run --shards N) "
                    "and load them into the database with the shard's marker, in one transaction. A shard that is "
                    "loaded already does nothing.")
    add_config_options(p, "--database-url", "--workdir")
    p.add_argument("--run-id", metavar="R", help=f"the sharded run (default: ${RUN_ID_ENV})")
    p.add_argument("--shards", type=int, metavar="N", help=f"shard count, checked against the run's (default: "
                                                            f"${SHARD_COUNT_ENV}, else the run's)")
    p.add_argument("--index", type=int, metavar="I", help=f"this shard, 0..N-1 (default: ${ARRAY_INDEX_ENV})")
    p.set_defaults(handler=_shard)

    p = subparsers.add_parser(
        "finalize", help="publish a sharded run once every shard loaded, else fail it",
        description="Make sharded run R current if all its shards loaded (index, attach and switch in one "
                    "transaction); otherwise mark it failed, delete its rows and exit non-zero: the previous run "
                    "stays current.")
    add_config_options(p, "--database-url", "--workdir", "--allow-regression")
    p.add_argument("--run-id", metavar="R", help=f"the sharded run (default: ${RUN_ID_ENV})")
    p.set_defaults(handler=_finalize)


def _shard(args: argparse.Namespace) -> dict[str, Any]:
    from batch.shards import run_shard

    run_id = run_id_from(args)
    index = args.index if args.index is not None else env_int(ARRAY_INDEX_ENV)
    if index is None:
        raise ConfigError(f"no shard index: pass --index I, or run as an AWS Batch array job ({ARRAY_INDEX_ENV})")
    shards = args.shards if args.shards is not None else env_int(SHARD_COUNT_ENV)
    return run_shard(_run_config(args, run_id), run_id, index, shards)


def _finalize(args: argparse.Namespace) -> dict[str, Any]:
    from batch.shards import finalize

    run_id = run_id_from(args)
    return finalize(_run_config(args, run_id), run_id)


def _run_config(args: argparse.Namespace, run_id: str) -> JobConfig:
    """The run's saved settings, under this job's config file, environment and options."""
    from batch.shards import run_settings

    return config_from_args(args, base=run_settings(config_from_args(args), run_id))


def run_id_from(args: argparse.Namespace) -> str:
    run_id = args.run_id or os.environ.get(RUN_ID_ENV)
    if not run_id:
        raise ConfigError(f"no run id: pass --run-id R or set {RUN_ID_ENV}")
    return run_id


def env_int(name: str) -> int | None:
    """An integer environment variable, None if unset."""
    value = os.environ.get(name, "").strip()
    if not value:
        return None
    try:
        return int(value)
    except ValueError:
        raise ConfigError(f"{name} must be an integer; got {value!r}") from None
