"""Fill the ``${Name}`` placeholders of the AWS definitions kept in ``deploy/``.

Each file under ``deploy/`` is the JSON body an AWS API takes (RegisterJobDefinition, an IAM
policy or trust document, a Step Functions definition, CreateSchedule), with placeholders such as
``${AccountId}`` for what differs per account. :func:`render` parses the JSON *first* and then
substitutes inside string values, so no value can break the JSON; a string that is exactly one
placeholder takes the value's own type (an ``int`` timeout stays a number). IAM policy variables
such as ``${aws:username}`` contain a colon, do not match, and are left for IAM.

Command line, rendering every ``*.json`` below a folder into another::

    python -m batch.aws.deploy --out build/deploy AccountId=123456789012 Region=eu-west-1 \\
        TimeoutSeconds:=86400 ...

``KEY=VALUE`` gives a string; ``KEY:=JSON`` a typed value (a number, say).
"""

from __future__ import annotations

import argparse
import json
import re
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from batch.errors import ConfigError

PLACEHOLDER = re.compile(r"\$\{([A-Za-z][A-Za-z0-9]*)\}")

# IAM role name → stem of its two files in deploy/iam: <stem>-trust.json (who may assume it)
# and <stem>-policy.json (its one inline policy). The other definitions refer to these names.
ROLES = {
    "topx-job": "job-role",
    "topx-batch-execution": "batch-execution-role",
    "topx-sagemaker-execution": "sagemaker-execution-role",
    "topx-state-machine": "state-machine-role",
    "topx-scheduler": "scheduler-role",
}


def load(path: str | Path) -> Any:
    """The JSON document at ``path``, placeholders still in it."""
    try:
        return json.loads(Path(path).read_text(encoding="utf-8"))
    except OSError as exc:
        raise ConfigError(f"cannot read {path}: {exc.strerror}") from None
    except json.JSONDecodeError as exc:
        raise ConfigError(f"{path}: not JSON: {exc}") from None


def placeholders(document: Any) -> set[str]:
    """Names of every ``${Name}`` placeholder in the document's string values."""
    if isinstance(document, dict):
        return set().union(*(placeholders(v) for v in document.values()))
    if isinstance(document, list):
        return set().union(*(placeholders(v) for v in document))
    if isinstance(document, str):
        return set(PLACEHOLDER.findall(document))
    return set()


def render(path: str | Path, **values: Any) -> Any:
    """The document at ``path`` with every placeholder filled from ``values``.

    Extra values are ignored (one set of values renders every file); a placeholder without a
    value is a :class:`ConfigError` naming all that are missing.
    """
    document = load(path)
    missing = placeholders(document) - values.keys()
    if missing:
        names = ", ".join("${" + name + "}" for name in sorted(missing))
        raise ConfigError(f"{path}: no value for {names}")
    return fill(document, values)


def fill(node: Any, values: dict[str, Any]) -> Any:
    """Substitute placeholders in ``node`` (any JSON value) from ``values``."""
    if isinstance(node, dict):
        return {key: fill(value, values) for key, value in node.items()}
    if isinstance(node, list):
        return [fill(value, values) for value in node]
    if isinstance(node, str):
        whole = PLACEHOLDER.fullmatch(node)
        if whole:
            return values[whole[1]]
        return PLACEHOLDER.sub(lambda m: str(values[m[1]]), node)
    return node


def parse_values(pairs: Sequence[str]) -> dict[str, Any]:
    """``KEY=VALUE`` (string) and ``KEY:=JSON`` (typed) arguments as a dict."""
    values: dict[str, Any] = {}
    for pair in pairs:
        key, sep, text = pair.partition("=")
        if not sep or not key:
            raise ConfigError(f"expected KEY=VALUE or KEY:=JSON, got {pair!r}")
        if key.endswith(":"):
            try:
                values[key[:-1]] = json.loads(text)
            except json.JSONDecodeError:
                raise ConfigError(f"{key[:-1]}: not a JSON value: {text!r}") from None
        else:
            values[key] = text
    return values


def render_tree(source: str | Path, out: str | Path, values: dict[str, Any]) -> list[Path]:
    """Render every ``*.json`` below ``source`` into the same layout below ``out``."""
    written = []
    for path in sorted(Path(source).rglob("*.json")):
        target = Path(out) / path.relative_to(source)
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(json.dumps(render(path, **values), indent=2) + "\n", encoding="utf-8")
        written.append(target)
    return written


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m batch.aws.deploy", description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", default="deploy", help="folder of templates (default: deploy)")
    parser.add_argument("--out", required=True, help="folder to write the rendered files to")
    parser.add_argument("values", nargs="*", metavar="KEY=VALUE", help="placeholder values")
    args = parser.parse_args(argv)
    try:
        written = render_tree(args.source, args.out, parse_values(args.values))
    except ConfigError as exc:
        print(f"deploy: error: {exc}", file=sys.stderr)
        return exc.exit_code
    print(json.dumps({"command": "deploy-render", "files": [str(p) for p in written]}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
