"""``topx submit``: submit the topx job to AWS Batch, optionally wait for it; ``--dry-run`` prints
the request instead.

The job definition is the one in ``deploy/batch-job-definition.json`` (named ``topx``); its
``Ref::stage`` and ``Ref::config`` parameters pick the command and the config file, so
``--param config=s3://bucket/jobs/other.toml`` runs with another file. ``--array-size N`` submits
an array job; ``--final-param``/``--final-definition`` add a job that starts only after every
child of the array succeeded.
"""

from __future__ import annotations

import argparse
import shlex
from datetime import UTC, datetime
from typing import Any

from batch.aws import batch_jobs
from batch.cli.common import add_config_options, config_from_args
from batch.errors import ConfigError
from batch.log import log, redact

DEFAULT_DEFINITION = "topx"
ARRAY_ID_SHOWN = "<jobId of the array job>"  # what a dry run shows where the real id will go


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "submit", help="submit the topx job to AWS Batch; --wait follows it, --dry-run prints the request",
        description="Submit the topx container job to AWS Batch. With --wait, follow it to the end and exit "
                    "non-zero with the job's status reason if it failed.")
    add_config_options(p)
    p.add_argument("--queue", metavar="Q", dest="cfg_batch__queue", help="job queue name or ARN (default: batch.queue)")
    p.add_argument("--definition", metavar="D", dest="cfg_batch__job_definition",
                   help=f"job definition: name, name:revision or ARN (default: batch.job_definition, "
                        f"{DEFAULT_DEFINITION})")
    p.add_argument("--name", metavar="NAME", help="job name (default: topx-<UTC time>)")
    p.add_argument("--param", action="append", default=[], metavar="K=V",
                   help="job definition parameter, e.g. config=s3://bucket/jobs/topx.toml (repeatable)")
    p.add_argument("--env", action="append", default=[], metavar="K=V",
                   help="container environment, e.g. TOPX_TOP=50 (repeatable; never put passwords here)")
    p.add_argument("--command", metavar="ARGS", help='container command instead of the definition\'s, '
                                                     'e.g. "cleanup --keep-runs 3"')
    p.add_argument("--array-size", type=int, metavar="N",
                   help="submit an array job of N children (AWS_BATCH_JOB_ARRAY_INDEX = 0..N-1)")
    p.add_argument("--final-param", action="append", default=[], metavar="K=V",
                   help="with --array-size: also submit a final job that waits for every child, with these "
                        "parameters over --param (repeatable)")
    p.add_argument("--final-definition", metavar="D", help="with --array-size: the final job's definition "
                                                            "(default: --definition)")
    p.add_argument("--wait", action="store_true", help="follow the job(s) to the end, logging each status change")
    p.add_argument("--poll", type=float, dest="cfg_batch__poll_s", metavar="SECONDS",
                   help="--wait: seconds between checks (default: batch.poll_s, 15)")
    p.add_argument("--dry-run", action="store_true", help="print the request(s) as JSON and submit nothing")
    p.add_argument("--region", metavar="R", dest="cfg_batch__region",
                   help="AWS region (default: batch.region, else AWS_DEFAULT_REGION or the profile's)")
    p.add_argument("--endpoint-url", metavar="URL", dest="cfg_batch__endpoint_url",
                   help="AWS Batch endpoint (a local emulator, say)")
    p.set_defaults(handler=_submit)


def _submit(args: argparse.Namespace) -> dict[str, Any]:
    settings = config_from_args(args).batch
    main, final = _requests(args, settings)
    if args.dry_run:
        shown = [main] + ([{**final, "dependsOn": [{"jobId": ARRAY_ID_SHOWN}]}] if final else [])
        return {"command": "submit", "dry_run": True, "requests": [batch_jobs.masked(r) for r in shown]}
    _warn_plain_credentials(main)
    batch = batch_jobs.client(settings.region, settings.endpoint_url)
    if final is None:
        jobs = [("job", batch_jobs.submit(batch, main))]
    else:
        array, last = batch_jobs.submit_array_then_final(batch, main, final)
        jobs = [("array", array), ("final", last)]
    summary = [{"role": role, **job} for role, job in jobs]
    if args.wait:
        for entry in summary:
            entry["status"] = batch_jobs.wait(batch, entry["jobId"], poll_s=settings.poll_s)["status"]
    return {"command": "submit", "queue": main["jobQueue"], "jobs": summary}


def _requests(args: argparse.Namespace, settings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The job's request and, for an array with a final job, the final job's request."""
    if not settings.queue:
        raise ConfigError("no job queue: pass --queue or set batch.queue (TOPX_BATCH_QUEUE)")
    wants_final = bool(args.final_param or args.final_definition)
    if wants_final and args.array_size is None:
        raise ConfigError("--final-param/--final-definition need --array-size (the final job waits for an array)")
    name = args.name or f"topx-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    params, env = _pairs(args.param, "--param"), _pairs(args.env, "--env")
    main = batch_jobs.job_request(name=name, queue=settings.queue, definition=settings.job_definition,
                                  parameters=params,
                                  environment=env, command=shlex.split(args.command or ""),
                                  array_size=args.array_size)
    if not wants_final:
        return main, None
    final = batch_jobs.job_request(name=f"{name}-final"[:128], queue=settings.queue,
                                   definition=args.final_definition or settings.job_definition,
                                   parameters={**params, **_pairs(args.final_param, "--final-param")},
                                   environment=env)
    return main, final


def _pairs(items: list[str], option: str) -> dict[str, str]:
    pairs = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"{option} expects KEY=VALUE; got {redact(item)!r}")
        pairs[key] = value
    return pairs


def _warn_plain_credentials(request: dict[str, Any]) -> None:
    """Job environments are readable by anyone who may describe the job: say so when one holds
    a credential (the summary and logs only ever show the masked form)."""
    plain = request.get("containerOverrides", {}).get("environment", [])
    shown = batch_jobs.masked(request).get("containerOverrides", {}).get("environment", [])
    for given, safe in zip(plain, shown, strict=True):
        if given["value"] != safe["value"]:
            log.warning("--env %s holds a credential in plain text, visible to anyone who can describe the "
                        "job; keep it in Secrets Manager and pass TOPX_DATABASE_SECRET_ARN instead", given["name"])
