"""What emulated SageMaker jobs do, part three: framework training jobs in script mode.

A training job on a framework's training image (``pytorch-training``) runs its entry point as the
container's training toolkit (sagemaker-training-toolkit) does, in a temporary directory laid out
as the container's ``/opt/ml``: ``sagemaker_submit_directory`` (sourcedir.tar.gz) is extracted
into ``code/``, each channel's objects are copied into ``input/data/<channel>/``, the
hyperparameters are JSON-decoded, the ``sagemaker_*`` ones kept for the toolkit and the others
passed as ``--key value`` in key order, and the ``SM_*`` environment is set. The script runs in a
subprocess with this interpreter, from ``code/``, and cannot import topx (the container has torch
and numpy, not topx). Whatever it leaves in ``SM_MODEL_DIR`` becomes ``model.tar.gz``. A script
that exits non-zero fails the job with the toolkit's ExecuteUserScriptError and the last lines
of its stderr as FailureReason; one that outlives ``MaxRuntimeInSeconds`` is killed.
"""

from __future__ import annotations

import io
import json
import logging
import os
import subprocess
import sys
import tarfile
import tempfile
import threading
from collections import deque
from pathlib import Path
from typing import Any

from batch.emulator.jobs import EmulatedJobError, MotoS3, split

log = logging.getLogger("topx.emulator")

FRAMEWORK_IMAGES = ("/pytorch-training:",)
HOST = "algo-1"
REASON_LIMIT = 1024  # SageMaker's FailureReason holds at most 1024 characters
STDERR_LINES = 10
# `python <program> <args>` from code/ (whose sys.path[0] is code/ as the script's own directory
# would be), with `batch` unimportable: a script that needs topx fails here as in the container.
_BOOTSTRAP = ("import sys; sys.modules['batch'] = None; sys.argv = sys.argv[1:]; "
              "exec(compile(open(sys.argv[0], 'rb').read(), sys.argv[0], 'exec'), "
              "{'__name__': '__main__', '__file__': sys.argv[0], '__builtins__': __builtins__})")


def train_script(job: Any, s3: MotoS3) -> list[dict[str, Any]]:
    """A script-mode training job: run the entry point, write model.tar.gz; no final metrics."""
    hyper = decode(job.hyper_parameters)
    framework = {k: v for k, v in hyper.items() if k.startswith("sagemaker_")}
    user = {k: v for k, v in hyper.items() if not k.startswith("sagemaker_")}
    program, submit = framework.get("sagemaker_program"), framework.get("sagemaker_submit_directory")
    if not program or not submit:
        raise EmulatedJobError("ClientError: a framework training job needs the sagemaker_program and "
                               "sagemaker_submit_directory hyperparameters")
    with tempfile.TemporaryDirectory(prefix="topx-emulated-job-") as base:
        ml = Path(base)
        code, model = ml / "code", ml / "model"
        for folder in (code, model, ml / "input" / "config", ml / "output" / "data"):
            folder.mkdir(parents=True)
        extract_source(s3, submit, str(program), code)
        channels = {c["ChannelName"]: download_channel(s3, c, ml / "input" / "data" / c["ChannelName"])
                    for c in job.input_data_config}
        args = to_cmd_args(user)
        env = container_env(job, ml, channels, user, framework, args)
        run_program(job, str(program), args, code, env)
        s3.write(job.model_artifacts["S3ModelArtifacts"], tar_directory(model))
    return []


def decode(hyperparameters: dict[str, str]) -> dict[str, Any]:
    """Each value JSON-decoded, or kept as the string it is where it is not JSON (as the toolkit)."""
    decoded = {}
    for key, value in hyperparameters.items():
        try:
            decoded[key] = json.loads(value)
        except ValueError:
            decoded[key] = value
    return decoded


def to_cmd_args(hyperparameters: dict[str, Any]) -> list[str]:
    """``--key value`` per hyperparameter in key order (``-k`` for a one-letter key); a value is
    ``str(value)``, a mapping ``k=v,…``: the toolkit's ``mapping.to_cmd_args``."""
    args = []
    for key in sorted(hyperparameters):
        value = hyperparameters[key]
        if isinstance(value, dict):
            value = ",".join(f"{k}={v}" for k, v in sorted(value.items()))
        args += [f"--{key}" if len(key) > 1 else f"-{key}", "" if value is None else str(value)]
    return args


def to_env_vars(values: dict[str, Any]) -> dict[str, str]:
    """``SM_<KEY>`` per value: a string as it is, anything else as compact sorted JSON (the toolkit's)."""
    def text(value: Any) -> str:
        if value is None:
            return ""
        return value if isinstance(value, str) else json.dumps(value, sort_keys=True, separators=(",", ":"))

    return {f"SM_{key.upper()}": text(value) for key, value in values.items()}


def extract_source(s3: MotoS3, uri: str, program: str, code: Path) -> None:
    """Unpack sourcedir.tar.gz into ``code`` (no member may land outside it)."""
    try:
        with tarfile.open(fileobj=io.BytesIO(s3.read(*split(uri))), mode="r:gz") as tar:
            tar.extractall(code, filter="data")
    except tarfile.TarError as exc:
        raise EmulatedJobError(f"ClientError: {uri} is not a usable sourcedir.tar.gz: {exc}") from None
    if not (code / program).is_file():
        raise EmulatedJobError(f"ClientError: the entry point {program} is not in {uri}")


def download_channel(s3: MotoS3, config: dict[str, Any], folder: Path) -> str:
    """Copy every object under the channel's S3 prefix into ``folder``, at its key below the
    prefix (an exact key: its base name); returns ``folder``."""
    uri = config["DataSource"]["S3DataSource"]["S3Uri"]
    found = s3.keys(uri)
    if not found:
        raise EmulatedJobError(f"ClientError: No S3 objects found under S3 URL \"{uri}\" given in input data "
                               f"source. Please ensure that the bucket exists in the selected region, that "
                               "objects exist under that S3 prefix, and that the role has access to them.")
    prefix = split(uri)[1]
    for bucket, key in found:
        relative = key[len(prefix):].lstrip("/") or key.rsplit("/", 1)[-1]
        target = (folder / relative).resolve()
        if not target.is_relative_to(folder.resolve()):
            raise EmulatedJobError(f"ClientError: s3://{bucket}/{key} would land outside the channel folder")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_bytes(s3.read(bucket, key))
    return str(folder)


def container_env(job: Any, ml: Path, channels: dict[str, str], user: dict[str, Any], framework: dict[str, Any],
                  args: list[str]) -> dict[str, str]:
    """The process environment the toolkit gives the script; a CPU image sees no GPU."""
    image = job.algorithm_specification["TrainingImage"]
    gpus = _gpus() if "-gpu-" in image else 0
    instance = job.resource_config.get("InstanceType", "")
    resource = {"current_host": HOST, "hosts": [HOST], "current_instance_type": instance,
                "network_interface_name": "eth0"}
    data_config = {c["ChannelName"]: {"TrainingInputMode": "File", "RecordWrapperType": "None",
                                      "S3DistributionType": c["DataSource"]["S3DataSource"].get(
                                          "S3DataDistributionType", "FullyReplicated")}
                   for c in job.input_data_config}
    config = ml / "input" / "config"
    for name, content in (("hyperparameters", job.hyper_parameters), ("resourceconfig", resource),
                          ("inputdataconfig", data_config)):
        (config / f"{name}.json").write_text(json.dumps(content))
    program = str(framework["sagemaker_program"])
    values = {
        "hosts": [HOST], "current_host": HOST, "current_instance_type": instance, "network_interface_name": "eth0",
        "hps": user, "user_args": args, "user_entry_point": program, "module_name": program.removesuffix(".py"),
        "module_dir": framework["sagemaker_submit_directory"],
        "framework_params": {k: v for k, v in framework.items() if k not in _TOOLKIT_PARAMS},
        "log_level": framework.get("sagemaker_container_log_level", logging.INFO),
        "resource_config": resource, "input_data_config": data_config, "channels": sorted(channels),
        "input_dir": str(ml / "input"), "input_config_dir": str(config), "output_dir": str(ml / "output"),
        "output_data_dir": str(ml / "output" / "data"), "model_dir": str(ml / "model"),
        "num_cpus": os.cpu_count() or 1, "num_gpus": gpus,
        **{f"channel_{name}": path for name, path in channels.items()},
        **{f"hp_{key}": value for key, value in user.items()},
    }
    env = {**os.environ, **to_env_vars(values), "TRAINING_JOB_NAME": job.training_job_name}
    if not gpus:
        env["CUDA_VISIBLE_DEVICES"] = ""
    return env


_TOOLKIT_PARAMS = {"sagemaker_program", "sagemaker_submit_directory", "sagemaker_container_log_level",
                   "sagemaker_job_name", "sagemaker_region", "sagemaker_enable_cloudwatch_metrics"}


def _gpus() -> int:
    """GPUs of this machine, as the toolkit counts them (``nvidia-smi --list-gpus``)."""
    try:
        listed = subprocess.run(["nvidia-smi", "--list-gpus"], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError):
        return 0
    return sum(line.startswith("GPU ") for line in listed.splitlines())


def run_program(job: Any, program: str, args: list[str], code: Path, env: dict[str, str]) -> None:
    """Run the script to its end; each line it prints goes to the emulator's log as it comes, as
    to CloudWatch, and the last lines of its stderr are kept for the FailureReason."""
    limit = job.stopping_condition.get("MaxRuntimeInSeconds") if job.stopping_condition else None
    name, tail = job.training_job_name, deque(maxlen=STDERR_LINES)
    with subprocess.Popen([sys.executable, "-c", _BOOTSTRAP, program, *args], cwd=code, env=env, text=True,
                          stdout=subprocess.PIPE, stderr=subprocess.PIPE) as process:
        readers = [threading.Thread(target=_forward, args=(stream, name, kept), daemon=True)
                   for stream, kept in ((process.stdout, None), (process.stderr, tail))]
        for reader in readers:
            reader.start()
        try:
            returncode = process.wait(timeout=limit)
        except subprocess.TimeoutExpired:
            process.kill()
            raise EmulatedJobError(f"MaxRuntimeExceeded: Training job {name} ran longer than "
                                   f"MaxRuntimeInSeconds ({limit} s) and was stopped") from None
        finally:
            for reader in readers:
                reader.join()
    if returncode != 0:
        raise EmulatedJobError(failure_reason(returncode, "\n".join(tail), " ".join(["python", program, *args])))


def _forward(stream: Any, name: str, kept: deque | None) -> None:
    for line in stream:
        line = line.rstrip("\n")
        log.info("[%s] %s", name, line)
        if kept is not None:
            kept.append(line)


def failure_reason(code: int, stderr: str, command: str) -> str:
    """``AlgorithmError: ExecuteUserScriptError`` with the exit code, the last lines of stderr
    (fewer while the reason is over SageMaker's 1024 characters) and the command."""
    lines = stderr.strip().splitlines()[-STDERR_LINES:]
    while True:
        message = "\n".join(lines)
        reason = (f'AlgorithmError: ExecuteUserScriptError:\nExitCode {code}\nErrorMessage "{message}"\n'
                  f'Command "{command}"')
        if len(reason) <= REASON_LIMIT or len(lines) <= 1:
            return reason[:REASON_LIMIT]
        lines = lines[1:]


def tar_directory(folder: Path) -> bytes:
    """``folder``'s files and folders, by path relative to it in path order, as a tar.gz."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for path in sorted(folder.rglob("*")):
            tar.add(path, arcname=path.relative_to(folder).as_posix(), recursive=False)
    return buffer.getvalue()
