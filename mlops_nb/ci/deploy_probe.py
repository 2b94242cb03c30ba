"""Run in deploy's fresh environment: load one registered version as serve does and predict
its stored training sample; print one JSON line (load seconds, rows predicted).

`python -m mlops_nb.ci.deploy_probe REGISTRY NAME VERSION ROWS`. A failure exits 1 with the
error on stderr (the parent reports it). Its peak memory is measured by the parent (wait4).
"""

from __future__ import annotations

import json
import sys
import time


def main(argv: list[str]) -> int:
    start = time.perf_counter()
    from pathlib import Path

    from mlops_nb.guards.registry import Registry, reference_of

    registry_root, name, version, rows = argv
    registry = Registry(Path(registry_root))
    mv = registry.get(name, int(version))
    model = registry.load_model(name, mv.version)
    loaded = time.perf_counter() - start
    sample = reference_of(mv)
    if sample is None:
        raise SystemExit(f"{mv.ref} has no stored training sample (reference/)")
    predicted = model.predict(sample.head(int(rows)))
    print(json.dumps({"load_seconds": round(loaded, 3), "rows": int(len(predicted))}))
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
