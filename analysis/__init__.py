"""analysis: the paper's figures from any fit, and what parallel scaling costs at inference
(Chen et al. 2025, "Parallel Scaling Law for Language Models", arXiv 2505.10475).

- ``analysis.figures``: Figures 2-4, residuals and held-out checks, from the fitter's results
  (``python -m analysis.figures``); ``analysis.equivalence``: what streams are worth in parameters, whether
  that depends on N, the P that matches a larger model, the forms beyond the measured P;
- ``analysis.scaling``: laws at one P: the compute-optimal frontier and the rollout figure
  (``python -m analysis.scaling``);
- ``analysis.tables``: the fits as Markdown or LaTeX tables, with bootstrap intervals;
- ``analysis.cost``: the analytic inference-cost model (memory, latency) and the paper's
  parallel-vs-parameter scaling comparison (``python -m analysis.cost``); GPU specs in ``analysis.gpus``;
- ``analysis.measure``: measured memory and latency of the model's ``generate``, against the model
  (``python -m analysis.measure``);
- ``analysis.plan``: the deployment planner, the (N, P) that reach a target loss on the fitted law and
  what each costs (``python -m analysis.plan``); ``analysis.budget``: the same from a training budget.

The submodules are not imported here: five of them run as ``python -m analysis.<name>``, and a package
that imports a module before runpy executes it as __main__ runs that module twice.
"""
