"""The runner's report: pytest's JUnit outcomes per test and model, counted per family side by side."""

import ast
import xml.etree.ElementTree as ElementTree
from collections import Counter
from pathlib import Path

# Test class -> (family, model): the report's rows are the models, its columns the families.
CLASSES = {
    "StockQwen2Test": ("Qwen2", "stock"),
    "ParScaleP1Test": ("Qwen2", "Qwen2ParScaleForCausalLM P = 1"),
    "ParScaleP2Test": ("Qwen2", "Qwen2ParScaleForCausalLM P = 2"),
    "ParScaleLMQwen2P2Test": ("Qwen2", "ParScaleForCausalLM P = 2"),
    "StockQwen3Test": ("Qwen3", "stock"),
    "ParScaleLMQwen3P1Test": ("Qwen3", "ParScaleForCausalLM P = 1"),
    "ParScaleLMQwen3P2Test": ("Qwen3", "ParScaleForCausalLM P = 2"),
}
FAMILIES = list(dict.fromkeys(family for family, _ in CLASSES.values()))
MODELS = sorted({model for _, model in CLASSES.values()}, key=lambda model: (model != "stock", model))
LABELS = [f"{family} {model}" for family, model in CLASSES.values()]


def generation_tests(test_utils: Path) -> set[str]:
    """The test methods GenerationTesterMixin defines in `test_utils` (read, not imported)."""
    for node in ast.parse(test_utils.read_text()).body:
        if isinstance(node, ast.ClassDef) and node.name == "GenerationTesterMixin":
            methods = [item.name for item in node.body if isinstance(item, ast.FunctionDef)]
            return {name for name in methods if name.startswith("test_")}
    return set()


def _is_generation_test(name: str, generation: set[str]) -> bool:
    # parameterized expands test_x into test_x_0_case, test_x_1_case, ...
    return name in generation or any(name.startswith(f"{test}_") and name[len(test) + 1 :][:1].isdigit()
                                     for test in generation)  # fmt: skip


def read_outcomes(junit: Path, test_utils: Path | None = None) -> dict[str, dict[str, dict]]:
    """{test name: {model label: {"outcome": passed|failed|skipped, "detail": first line of the reason,
    "generation": whether GenerationTesterMixin of `test_utils` defines the test}}}."""
    generation = generation_tests(test_utils) if test_utils is not None and test_utils.exists() else set()
    outcomes: dict[str, dict[str, dict]] = {}
    for case in ElementTree.parse(junit).iter("testcase"):
        family_and_model = CLASSES.get(case.get("classname", "").rsplit(".", 1)[-1])
        if family_and_model is None:
            continue
        outcome, detail = "passed", ""
        for child in case:
            if child.tag in ("failure", "error"):
                outcome, detail = "failed", (child.get("message") or child.text or "").strip()
            elif child.tag == "skipped":
                outcome, detail = "skipped", (child.get("message") or "").strip()
        name = case.get("name")
        outcomes.setdefault(name, {})[" ".join(family_and_model)] = {
            "outcome": outcome,
            "detail": detail.splitlines()[0][:200] if detail else "",
            "generation": _is_generation_test(name, generation),
        }
    return outcomes


def _counts_table(outcomes) -> list[str]:
    """Rows: the models that ran; columns: families; cells: passed / failed / skipped ("-": not run)."""
    lines = ["| model | " + " | ".join(f"{family} passed / failed / skipped" for family in FAMILIES) + " |",
             "|---|" + "---|" * len(FAMILIES)]  # fmt: skip
    for model in MODELS:
        cells = []
        for family in FAMILIES:
            results = [result[f"{family} {model}"] for result in outcomes.values() if f"{family} {model}" in result]
            counts = Counter(result["outcome"] for result in results)
            cells.append(f"{counts['passed']} / {counts['failed']} / {counts['skipped']}" if results else "-")
        if any(cell != "-" for cell in cells):
            lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return lines


def _differing_table(outcomes, labels) -> list[str]:
    lines = ["| test | " + " | ".join(labels) + " |", "|---|" + "---|" * len(labels)]
    for name, result in sorted(outcomes.items()):
        if len({entry["outcome"] for entry in result.values()}) < 2:
            continue
        cells = []
        for label in labels:
            entry = result.get(label, {"outcome": "-", "detail": ""})
            detail = f": {entry['detail']}" if entry["outcome"] == "failed" and entry["detail"] else ""
            cells.append((entry["outcome"] + detail).replace("|", "\\|"))
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return lines


def markdown_report(outcomes, sources, version) -> str:
    labels = [label for label in LABELS if any(label in result for result in outcomes.values())]
    generation = {name: result for name, result in outcomes.items()
                  if any(entry.get("generation") for entry in result.values())}  # fmt: skip
    lines = [f"transformers {version} common model tests. Sources: "
             + "; ".join(f"{part} from {origin}" for part, origin in sources.items()) + ".", ""]  # fmt: skip
    lines += ["All tests:", "", *_counts_table(outcomes)]
    if generation:
        lines += ["", "Of which GenerationTesterMixin's:", "", *_counts_table(generation)]
    lines += ["", "Tests whose outcome differs between the models:", "", *_differing_table(outcomes, labels)]
    failing_everywhere = [name for name, result in sorted(outcomes.items())
                          if all(entry["outcome"] == "failed" for entry in result.values())]  # fmt: skip
    if failing_everywhere:
        lines += ["", "Failing for every model: " + ", ".join(failing_everywhere)]
    reasons = Counter(entry["detail"] for result in outcomes.values() for entry in result.values()
                      if entry["outcome"] == "skipped")  # fmt: skip
    lines += ["", "Skip reasons (tests x models):", ""]
    lines += [f"- {count} x {reason or '(none given)'}" for reason, count in reasons.most_common()]
    return "\n".join(lines) + "\n"
