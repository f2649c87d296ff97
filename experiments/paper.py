"""The paper's numbers, written once: every script and the report read them from here.

Goodfellow, Shlens & Szegedy (2015), as ../shared/PAPER.md lists them. `ROWS`
is the paper's table, one `Row` per line (what REPORT.md's summary walks);
`FIGURES` holds every number a script compares with, one `Figure` each,
keyed by a short name (``"M3.fgsm_error"``). All are MNIST numbers with
eps = 0.25 unless the row says otherwise: they stand beside MNIST runs only.

Example:
  >>> FIGURES["M3.fgsm_error"].value
  0.894
"""

from __future__ import annotations

from typing import NamedTuple

DATASET = "mnist"
"""The dataset of every number here; a run on another one is not compared with them."""


class Row(NamedTuple):
  """One line of the paper's table.

  Attributes:
    id: the row's id, e.g. ``"M1"``.
    experiment: what the row is about.
    paper: the paper's figures, as the paper states them.
    results: the results file (without ``.json``) expected to measure it.
    out_of_scope: why the row is not reproduced here, or "" when it is in scope.
  """

  id: str
  experiment: str
  paper: str
  results: str
  out_of_scope: str = ""


class Figure(NamedTuple):
  """One number of the paper, as a script compares ours with it.

  Attributes:
    row: the id of its `Row`.
    metric: what it measures, as our tables name it.
    printed: the figure as the paper prints it (``"89.4%"``, ``"above 5%"``).
    value: the figure as a fraction, or None where the paper's claim is
      qualitative.
  """

  row: str
  metric: str
  printed: str
  value: float | None


ROWS = (
    Row(
        "M1",
        "shallow softmax regression under FGSM",
        "99.9% error, confidence 79.3% on the mistakes",
        "softmax_regression",
    ),
    Row(
        "M2",
        "logistic regression, 3s vs 7s",
        "1.6% clean error; 99% error under FGSM (Fig. 2)",
        "logistic_regression",
    ),
    Row(
        "M3",
        "maxout network (240 x 5 pieces, dropout) under FGSM",
        "89.4% error, confidence 97.6%",
        "mnist_maxout",
    ),
    Row(
        "M4",
        "M3 trained with the adversarial objective (alpha 0.5)",
        "clean test error 0.94% -> 0.84%",
        "mnist_maxout",
    ),
    Row(
        "M5",
        "larger maxout (1600 units), adversarial early stopping, 5 seeds",
        "without: 1.14%; with: 0.782% mean",
        "mnist_maxout",
    ),
    Row(
        "M6",
        "robustness of the M5 model",
        "FGSM error 89.4% -> 17.9%; transfer 19.6% / 40.9%; confidence 81.4%; "
        "more localized weights (Fig. 3)",
        "mnist_maxout",
    ),
    Row(
        "M7",
        "noise-trained controls",
        "sign noise: 86.2% (conf. 97.3%); U(-eps, eps): 90.4% (conf. 97.8%)",
        "noise_controls",
    ),
    Row(
        "L1",
        "L1 weight decay instead of the adversarial objective",
        "0.0025 stalls training above 5% train error; smaller: no benefit",
        "logistic_regression",
    ),
    Row(
        "M8",
        "shallow RBF network",
        "55.4% FGSM error, confidence 1.2%; 60.6% confidence on clean examples",
        "rbf_network",
    ),
    Row(
        "T",
        "transfer of the maxout's FGSM examples (section 8)",
        "softmax agrees 54.6%, RBF 16.0%; where both err 84.6%, 54.3%; " "RBF with softmax 53.6%",
        "rbf_network",
    ),
    Row(
        "F4",
        "Fig. 4: maxout logits along one FGSM direction",
        "piecewise linear, nearly straight; broad adversarial regions",
        "epsilon_sweep",
    ),
    Row(
        "E1",
        "ensemble of 12 maxout nets",
        "91.1% error attacking the ensemble, 87.9% attacking one member",
        "ensemble",
    ),
    Row(
        "DBM",
        "MP-DBM",
        "97.5% error",
        "",
        "a separate model (the multi-prediction deep Boltzmann machine) that the paper "
        "only quotes; not implemented",
    ),
    Row(
        "R",
        "rubbish class: 10,000 samples of N(0, I)",
        "maxout softmax 98.35% (conf. 92.8%); sigmoid 68%; softmax regression 59.8%; " "RBF 0%",
        "rubbish",
    ),
    Row(
        "C10",
        "CIFAR-10 convolutional maxout, eps 0.1",
        "87.15% error, confidence 96.6%",
        "",
        "extended scope: needs CIFAR-10 and a convolutional maxout; this reproduction "
        "covers MNIST",
    ),
    Row(
        "IN",
        "GoogLeNet on ImageNet, eps 0.007 (the panda)",
        "qualitative",
        "",
        "the original GoogLeNet weights are not available; qualitative only",
    ),
)


FIGURES = {
    "M1.fgsm_error": Figure("M1", "softmax regression: FGSM error", "99.9%", 0.999),
    "M1.fgsm_confidence": Figure(
        "M1", "softmax regression: confidence on FGSM mistakes", "79.3%", 0.793
    ),
    "M2.test_error": Figure("M2", "logistic regression, 3 vs 7: clean test error", "1.6%", 0.016),
    "M2.fgsm_error": Figure("M2", "logistic regression, 3 vs 7: FGSM error", "99%", 0.99),
    "M3.fgsm_error": Figure("M3", "FGSM error, clean maxout", "89.4%", 0.894),
    "M3.fgsm_confidence": Figure("M3", "confidence on FGSM mistakes, clean maxout", "97.6%", 0.976),
    "M4.clean_test_error": Figure("M4", "test error, clean maxout", "0.94%", 0.0094),
    "M4.adversarial_test_error": Figure(
        "M4", "test error, adversarially trained maxout", "0.84%", 0.0084
    ),
    "M5.clean_test_error": Figure(
        "M5", "test error without the adversarial objective", "1.14%", 0.0114
    ),
    "M5.adversarial_test_error": Figure("M5", "test error with it", "0.782% (mean)", 0.00782),
    "M6.fgsm_error": Figure("M6", "FGSM error, adversarially trained maxout", "17.9%", 0.179),
    "M6.fgsm_confidence": Figure(
        "M6", "confidence on FGSM mistakes, adversarially trained", "81.4%", 0.814
    ),
    "M6.clean_to_adversarial": Figure(
        "M6", "clean model's FGSM examples, error of the adversarial one", "19.6%", 0.196
    ),
    "M6.adversarial_to_clean": Figure(
        "M6", "adversarial model's FGSM examples, error of the clean one", "40.9%", 0.409
    ),
    "M6.localized": Figure(
        "M6",
        "first-layer filters' participation ratio, adversarial / clean " "(Fig. 3, our proxy)",
        "more localized (< 1)",
        None,
    ),
    "M7.sign.fgsm_error": Figure("M7", "FGSM error, +-eps sign noise training", "86.2%", 0.862),
    "M7.sign.fgsm_confidence": Figure(
        "M7", "confidence on FGSM mistakes, +-eps sign noise training", "97.3%", 0.973
    ),
    "M7.uniform.fgsm_error": Figure(
        "M7", "FGSM error, U(-eps, eps) noise training", "90.4%", 0.904
    ),
    "M7.uniform.fgsm_confidence": Figure(
        "M7", "confidence on FGSM mistakes, U(-eps, eps) noise training", "97.8%", 0.978
    ),
    "L1.large": Figure("L1", "maxout, L1 coefficient 0.0025: training error", "above 5%", 0.05),
    "L1.small.train_error": Figure(
        "L1", "maxout, small L1 coefficient: training error", "trains", None
    ),
    "L1.small.fgsm_error": Figure(
        "L1", "maxout, small L1 coefficient: FGSM error", "no benefit", None
    ),
    "M8.fgsm_error": Figure("M8", "RBF network: FGSM error", "55.4%", 0.554),
    "M8.fgsm_confidence": Figure("M8", "RBF network: confidence on FGSM mistakes", "1.2%", 0.012),
    "M8.clean_confidence": Figure(
        "M8", "RBF network: mean confidence on clean test examples", "60.6%", 0.606
    ),
    "T.softmax_on_maxout_mistakes": Figure(
        "T", "on maxout's FGSM mistakes: softmax regression predicts its class", "54.6%", 0.546
    ),
    "T.rbf_on_maxout_mistakes": Figure(
        "T", "on maxout's FGSM mistakes: RBF network predicts its class", "16.0%", 0.16
    ),
    "T.softmax_where_both_wrong": Figure(
        "T", "where maxout and softmax regression both err: same class", "84.6%", 0.846
    ),
    "T.rbf_where_both_wrong": Figure(
        "T", "where maxout and RBF network both err: same class", "54.3%", 0.543
    ),
    "T.rbf_with_softmax": Figure(
        "T", "where softmax regression and RBF both err: same class", "53.6%", 0.536
    ),
    "F4.line_r2": Figure(
        "F4",
        "mean R^2 of a line per logit, each side of eps = 0 (Fig. 4)",
        "nearly straight, piecewise linear",
        1.0,
    ),
    "F4.wrong_fraction": Figure(
        "F4", "fraction of eps in (0, eps_max] misclassified (Fig. 4)", "broad regions", 1.0
    ),
    "E1.on_ensemble": Figure("E1", "FGSM error, attack on the ensemble", "91.1%", 0.911),
    "E1.on_member": Figure(
        "E1", "FGSM error of the ensemble, attack on one member", "87.9%", 0.879
    ),
    "R.maxout_softmax.error": Figure("R", "maxout (softmax): rubbish error", "98.35%", 0.9835),
    "R.maxout_softmax.confidence": Figure(
        "R", "maxout (softmax): confidence on rubbish errors", "92.8%", 0.928
    ),
    "R.maxout_softmax.fives": Figure(
        "R", "maxout (softmax): share of false positives that are 5s", "45.3%", 0.453
    ),
    "R.maxout_softmax.eights": Figure(
        "R", "maxout (softmax): share of false positives that are 8s", "0%", 0.0
    ),
    "R.maxout_sigmoid.error": Figure("R", "maxout (sigmoids): rubbish error", "68%", 0.68),
    "R.maxout_sigmoid.confidence": Figure(
        "R", "maxout (sigmoids): confidence on rubbish errors", "87.9%", 0.879
    ),
    "R.softmax_regression.error": Figure("R", "softmax regression: rubbish error", "59.8%", 0.598),
    "R.softmax_regression.confidence": Figure(
        "R", "softmax regression: confidence on rubbish errors", "70.8%", 0.708
    ),
    "R.rbf.error": Figure("R", "RBF network: rubbish error", "0%", 0.0),
}
