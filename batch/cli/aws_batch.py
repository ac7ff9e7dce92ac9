"""``topx submit``: submit the topx job to AWS Batch, optionally wait for it; ``--dry-run`` prints
the request instead.

The job definition is the one in ``deploy/batch-job-definition.json`` (named ``topx``); its
``Ref::stage`` and ``Ref::config`` parameters pick the command and the config file, so
``--param config=s3://bucket/jobs/other.toml`` runs with another file. ``--array-size N`` submits
an array job; ``--final-param``/``--final-definition`` add a job that starts only after every
child of the array succeeded.

``--shards N`` submits a sharded run (:mod:`batch.shards`) as three jobs of the same definition,
told apart by the ``stage`` parameter, sharing one new run id and the ``s3://`` work directory
through their environment: ``run`` (prepare: ingest to evaluate, the run collecting N shards),
an array of N ``shard`` jobs after it, and ``finalize`` after the whole array.
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
from batch.shardplan import ROLES, RUN_ID_ENV, sharded_jobs

DEFAULT_DEFINITION = "topx"
ARRAY_ID_SHOWN = "<jobId of the array job>"  # what a dry run shows where the real id will go
PREPARE_ID_SHOWN = "<jobId of the prepare job>"


def register(subparsers: argparse._SubParsersAction) -> None:
    p = subparsers.add_parser(
        "submit", help="submit the topx job to AWS Batch; --wait follows it, --dry-run prints the request",
        description="Submit the topx container job to AWS Batch. With --wait, follow it to the end and exit "
                    "non-zero with the job's status reason if it failed.")
    add_config_options(p)
    p.add_argument("--workdir", metavar="S3_PREFIX", dest="cfg_workdir",
                   help="with --shards: the s3:// work directory the jobs share (default: workdir in the config)")
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
    p.add_argument("--shards", type=int, metavar="N",
                   help="submit a sharded run: a prepare job (topx run --shards N), an array of N shard jobs after "
                        "it, and a finalize job after them, sharing a new run id and the s3:// work directory "
                        "(--workdir, or workdir in the config)")
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
    if args.shards is not None:
        return _submit_sharded(args)
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
    run_id = {e["name"]: e["value"] for e in main.get("containerOverrides", {}).get("environment", [])}.get(RUN_ID_ENV)
    return {"command": "submit", "queue": main["jobQueue"], **({"run_id": run_id} if run_id else {}), "jobs": summary}


def _submit_sharded(args: argparse.Namespace) -> dict[str, Any]:
    from batch.pipeline import new_run_id

    cfg = config_from_args(args)
    settings, run_id = cfg.batch, new_run_id()
    requests = _sharded_requests(args, settings, run_id, cfg.workdir)
    if args.dry_run:
        shown = [requests[0], {**requests[1], "dependsOn": [{"jobId": PREPARE_ID_SHOWN}]},
                 {**requests[2], "dependsOn": [{"jobId": ARRAY_ID_SHOWN}]}]
        return {"command": "submit", "dry_run": True, "run_id": run_id,
                "requests": [batch_jobs.masked(r) for r in shown]}
    _warn_plain_credentials(requests[0])
    batch = batch_jobs.client(settings.region, settings.endpoint_url)
    jobs = batch_jobs.submit_prepared_array(batch, *requests)
    summary = [{"role": role, **job} for (role, _, _), job in zip(ROLES, jobs, strict=True)]
    if args.wait:
        for entry in summary:
            entry["status"] = batch_jobs.wait(batch, entry["jobId"], poll_s=settings.poll_s)["status"]
    return {"command": "submit", "queue": requests[0]["jobQueue"], "run_id": run_id, "shards": args.shards,
            "jobs": summary}


def _sharded_requests(args: argparse.Namespace, settings, run_id: str, workdir: str) -> list[dict[str, Any]]:
    """Prepare, shard-array and finalize requests of one sharded run (no dependencies yet)."""
    _check_sharded_options(args, settings)
    name = args.name or f"topx-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    plan = sharded_jobs(name, args.shards, workdir, run_id, parameters=_pairs(args.param, "--param"),
                        environment=_pairs(args.env, "--env"))
    return [batch_jobs.job_request(name=job.name, queue=settings.queue, definition=settings.job_definition,
                                   parameters=job.parameters, environment=job.environment,
                                   array_size=job.array_size) for job in plan]


def _check_sharded_options(args: argparse.Namespace, settings) -> None:
    if not settings.queue:
        raise ConfigError("no job queue: pass --queue or set batch.queue (TOPX_BATCH_QUEUE)")
    if args.array_size is not None or args.final_param or args.final_definition or args.command:
        raise ConfigError("--shards makes its own three jobs: drop --array-size, --final-param, --final-definition "
                          "and --command")
    if args.shards not in batch_jobs.ARRAY_SIZES:
        raise ConfigError(f"--shards must be {batch_jobs.ARRAY_SIZES.start} to {batch_jobs.ARRAY_SIZES.stop - 1} "
                          f"(an AWS Batch array); got {args.shards}")


def _requests(args: argparse.Namespace, settings) -> tuple[dict[str, Any], dict[str, Any] | None]:
    """The job's request and, for an array with a final job, the final job's request."""
    if not settings.queue:
        raise ConfigError("no job queue: pass --queue or set batch.queue (TOPX_BATCH_QUEUE)")
    wants_final = bool(args.final_param or args.final_definition)
    if wants_final and args.array_size is None:
        raise ConfigError("--final-param/--final-definition need --array-size (the final job waits for an array)")
    name = args.name or f"topx-{datetime.now(UTC):%Y%m%d-%H%M%S}"
    params, env = _pairs(args.param, "--param"), _pairs(args.env, "--env")
    if params.get("stage", "run") == "run" and not args.command and args.array_size is None:
        # One run id for every attempt of the job: a retried attempt resumes the run (from the
        # s3:// work directory) and reuses its SageMaker jobs instead of starting over.
        from batch.pipeline import new_run_id

        env = {RUN_ID_ENV: new_run_id(), **env}
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
