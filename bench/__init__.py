"""distgan benchmarks: ``python -m bench [--quick] [--json FILE] [--only NAME]``.

Each module ``bench/<name>.py`` defines ``run(quick: bool) -> list[dict]`` whose
rows are ``{"case", "value", "reference", "unit"}``: the distgan figure and a
reference measured in the same run (plain PyTorch, ImageFolder, scipy, ...).
The runner adds ``ratio = value / reference`` and prints one table. Figures are
for reading and comparing across commits, never asserted in tests.
"""
