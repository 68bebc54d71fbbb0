"""Fails (exit 1) when a model's test accuracy (the mean over its seeds) is below its floor in
.ci/floors.yaml, when a floor's metrics are missing, when a trained model has no floor (so none
goes unchecked), or when a floor sits below the figure the model's source reports (its registry
entry), so CI fails the day we stop beating the source. A reported test loss is held the same
way: ours must be below it."""
import json
import sys
from pathlib import Path

import yaml

from pipeline.models import get_model_spec

floors = yaml.safe_load(Path(sys.argv[1]).read_text())
failures = []
# Every model that wrote test metrics, in any dataset, must have a floor.
for path in sorted(Path("metrics").glob("*/*.json")):
    if path.parent.name == "registry":  # the champions' records, not a model's metrics
        continue
    if path.stem not in floors.get(path.parent.name, {}):
        failures.append(f"{path.parent.name}/{path.stem}: trained but has no floor in {sys.argv[1]}")
for dataset, models in floors.items():
    for model, floor in models.items():
        reported = get_model_spec(model).reported
        if reported is not None and floor < reported.accuracy:
            failures.append(f"{dataset}/{model}: floor {floor:.4f} is below the reported {reported.accuracy:.4f} "
                            f"({reported.source})")
        path = Path("metrics") / dataset / f"{model}.json"
        if not path.exists():
            failures.append(f"{dataset}/{model}: {path} missing (did its stages run?)")
            continue
        metrics = json.loads(path.read_text())
        accuracy = metrics["test_accuracy"]
        status = "ok" if accuracy >= floor else "BELOW FLOOR"
        seeds = ""
        if metrics.get("seeds", 1) > 1:
            seeds = f" (mean of {metrics['seeds']} seeds, std {metrics['test_accuracy_std']:.4f})"
        source = f", reported {reported.accuracy:.4f} ({reported.source})" if reported else ""
        print(f"{dataset:6} {model:20} test accuracy {accuracy:.4f}{seeds}  floor {floor:.4f}{source}  {status}")
        if accuracy < floor:
            failures.append(f"{dataset}/{model}: {accuracy:.4f} < floor {floor:.4f}")
        if reported is not None and reported.loss is not None and metrics["test_loss"] >= reported.loss:
            failures.append(f"{dataset}/{model}: test loss {metrics['test_loss']:.4f} is not below the reported "
                            f"{reported.loss:.4f} ({reported.source})")
if failures:
    print("\n".join(["FAILED:"] + failures))
    sys.exit(1)
print(f"all {sum(len(m) for m in floors.values())} models at or above their floors")
