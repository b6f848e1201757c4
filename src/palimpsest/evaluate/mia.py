"""Membership inference audits for unlearning, in two tiers.

1. Population attacks, as the published unlearning repos run them (for comparability): one
   feature per example (loss, correct-class probability, entropy, ...), a simple classifier
   trained on retain examples (members) against test examples (non-members), classes balanced,
   then applied to the forget set. "MIA score" = fraction of forget examples predicted member;
   SalUn's "MIA-efficacy" = 1 − MIA score (SalUn, Fan et al. 2024: SVC(C=3, gamma="auto", RBF)
   on the correct-class probability; SCRUB, Kurmanji et al. 2023, logistic regression on the
   loss). These are weak attacks (ANCHORS.md): a single threshold-like rule for all examples.
2. Per-example attacks with reference models: RMIA (Zarifzadeh et al., "Low-Cost High-Power
   Membership Inference Attacks", 2024) and LiRA (Carlini et al., "Membership Inference Attacks
   From First Principles", 2022), offline (OUT reference models only) or online (IN and OUT).
   Reported as AUC and TPR at 1% and 0.1% FPR (`roc_metrics`).

Every result is read next to the retrained model's (audits.compare_to_reference). All attack
functions are pure functions over stored per-example outputs (audits.model_outputs); only
`train_reference_models` and `reference_outputs` touch models.
"""
from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

import numpy as np
import torch
from sklearn.metrics import roc_curve

from ..core.errors import ConfigError
from ..core.seeding import derive_seed
from .audits import model_outputs

CLASSIFIERS = ("logistic", "svc")
# The attacks the published repos use; "correct_prob" is what SalUn and SCRUB call "confidence".
DEFAULT_FEATURES = ("loss", "correct_prob", "entropy")
DEFAULT_FPRS = (0.01, 0.001)


# -- ROC ---------------------------------------------------------------------------------------


def tpr_at_fpr(fpr: np.ndarray, tpr: np.ndarray, target_fpr: float) -> float:
    """TPR of a ROC curve at a real threshold: the highest TPR among the curve's points whose FPR
    is at most `target_fpr` (a threshold the attacker can actually set, never an interpolation
    between two thresholds). Where the curve has several points at one FPR (a vertical step), the
    highest TPR counts. With n negatives the only reachable FPRs are multiples of 1/n, so below
    1/n this is the TPR at FPR 0 (see `roc_metrics`' flag)."""
    fpr, tpr = np.asarray(fpr, float), np.asarray(tpr, float)
    reachable = fpr <= target_fpr + 1e-12
    return float(tpr[reachable].max()) if reachable.any() else 0.0


def threshold_at_fpr(positive_scores, negative_scores, target_fpr: float) -> tuple[float, float, float]:
    """(threshold, its FPR, its TPR) of the rule "member when score >= threshold" with the highest
    TPR among thresholds whose FPR on the negatives is at most `target_fpr`."""
    pos, neg = np.asarray(positive_scores, float).ravel(), np.asarray(negative_scores, float).ravel()
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    fpr, tpr, thresholds = roc_curve(labels, np.concatenate([pos, neg]), drop_intermediate=False)
    reachable = np.flatnonzero(fpr <= target_fpr + 1e-12)
    best = reachable[np.argmax(tpr[reachable])]
    return float(thresholds[best]), float(fpr[best]), float(tpr[best])


def auc_interval(positive_scores, negative_scores, level: float = 0.95) -> dict[str, float]:
    """AUC with its standard error and a normal confidence interval by DeLong's method (DeLong,
    DeLong and Clarke-Pearson, "Comparing the Areas under Two or More Correlated Receiver Operating
    Characteristic Curves", 1988): with placements V10_i = P(s_i⁺ > s⁻) + ½ P(tie) of each positive
    against the negatives and V01_j = P(s⁺ > s_j⁻) + ½ P(tie) of each negative against the
    positives, Var(AUC) = var(V10)/m + var(V01)/n (sample variances, m positives, n negatives).
    Keys: auc, se, lo, hi (clipped to [0, 1]), level. NaN when a side has fewer than two scores."""
    from scipy.stats import norm
    pos, neg = np.asarray(positive_scores, float).ravel(), np.asarray(negative_scores, float).ravel()
    m, n = len(pos), len(neg)
    if m < 2 or n < 2:
        nan = float("nan")
        return {"auc": _auc(pos, neg) if m and n else nan, "se": nan, "lo": nan, "hi": nan, "level": level}
    sorted_neg, sorted_pos = np.sort(neg), np.sort(pos)
    v10 = (np.searchsorted(sorted_neg, pos, "left") + np.searchsorted(sorted_neg, pos, "right")) / (2.0 * n)
    v01 = 1.0 - (np.searchsorted(sorted_pos, neg, "left") + np.searchsorted(sorted_pos, neg, "right")) / (2.0 * m)
    auc = float(v10.mean())
    se = float(np.sqrt(v10.var(ddof=1) / m + v01.var(ddof=1) / n))
    z = float(norm.ppf(0.5 + level / 2))
    return {"auc": auc, "se": se, "lo": max(0.0, auc - z * se), "hi": min(1.0, auc + z * se), "level": level}


def roc_metrics(positive_scores, negative_scores, fprs: Sequence[float] = DEFAULT_FPRS) -> dict[str, float]:
    """AUC and TPR at the given FPRs of scores where larger = "member".

    Positives are the examples the attack should call members (for an unlearning audit: the
    forget set), negatives known non-members (held-out test examples). Keys: auc, auc_se,
    auc_lo / auc_hi (DeLong 95 % interval, `auc_interval`), tpr_at_fpr_<f> for each f in `fprs`
    (e.g. tpr_at_fpr_0.01: the TPR at a real threshold whose FPR is at most f, `tpr_at_fpr`),
    n_positive, n_negative, min_resolvable_fpr = 1 / n_negative. Below min_resolvable_fpr no
    threshold has an FPR between 0 and f, so the value is the TPR at FPR 0 and says nothing about
    f: `limited_by_sample_size_<f>` (1.0 / 0.0) flags it. ROC from sklearn's roc_curve.
    """
    pos, neg = np.asarray(positive_scores, float).ravel(), np.asarray(negative_scores, float).ravel()
    if np.isnan(pos).any() or np.isnan(neg).any():
        raise ConfigError("attack scores contain NaN", expected="finite scores (±inf allowed)",
                          got=f"{int(np.isnan(pos).sum())} positive, {int(np.isnan(neg).sum())} negative NaN")
    out: dict[str, float] = {"n_positive": float(len(pos)), "n_negative": float(len(neg)),
                             "min_resolvable_fpr": 1.0 / len(neg) if len(neg) else float("nan")}
    if not len(pos) or not len(neg):
        out.update(auc=float("nan"), auc_se=float("nan"), auc_lo=float("nan"), auc_hi=float("nan"))
        for f in fprs:
            out[f"tpr_at_fpr_{f:g}"] = float("nan")
            out[f"limited_by_sample_size_{f:g}"] = 1.0
        return out
    labels = np.concatenate([np.ones(len(pos)), np.zeros(len(neg))])
    scores = np.concatenate([pos, neg])
    fpr, tpr, _ = roc_curve(labels, scores, drop_intermediate=False)
    out["auc"] = _auc(pos, neg)
    interval = auc_interval(pos, neg)
    out.update(auc_se=interval["se"], auc_lo=interval["lo"], auc_hi=interval["hi"])
    for f in fprs:
        out[f"tpr_at_fpr_{f:g}"] = tpr_at_fpr(fpr, tpr, f)
        out[f"limited_by_sample_size_{f:g}"] = float(f < 1.0 / len(neg))
    return out


def _auc(pos: np.ndarray, neg: np.ndarray) -> float:
    """P(score of a positive > score of a negative) + ½ P(tie): the area under the ROC curve,
    computed from ranks (equal to sklearn's roc_auc_score), without a quadratic pair matrix."""
    scores = np.concatenate([pos, neg])
    order = np.argsort(scores, kind="mergesort")
    ranks = np.empty(len(scores))
    sorted_scores = scores[order]
    # Average ranks of ties (1-based).
    _, first, counts = np.unique(sorted_scores, return_index=True, return_counts=True)
    avg = first + (counts + 1) / 2.0
    ranks[order] = np.repeat(avg, counts)
    rank_sum = ranks[:len(pos)].sum()
    return float((rank_sum - len(pos) * (len(pos) + 1) / 2.0) / (len(pos) * len(neg)))


# -- tier 1: population attacks ----------------------------------------------------------------


def _as_features(values) -> np.ndarray:
    arr = np.asarray(values, dtype=float)
    if arr.ndim == 1:
        arr = arr[:, None]
    if arr.ndim != 2:
        raise ConfigError("attack features must be (N,) or (N, d)", expected="one row per example",
                          got=f"array of shape {arr.shape}")
    # Infinite features (a loss of exactly +inf) break every classifier; the largest finite float
    # keeps their order.
    return np.nan_to_num(arr, nan=0.0, posinf=np.finfo(float).max / 1e10, neginf=-np.finfo(float).max / 1e10)


def _make_classifier(name: str, seed: int):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler
    from sklearn.svm import SVC
    if name == "logistic":
        return make_pipeline(StandardScaler(), LogisticRegression(max_iter=1000))
    if name == "svc":
        # SalUn's evaluation/SVC_MIA.py settings (raw features, no scaling).
        return SVC(C=3, gamma="auto", kernel="rbf", random_state=seed)
    raise ConfigError("unknown attack classifier", expected=" or ".join(CLASSIFIERS), got=name)


def _member_score(clf, x: np.ndarray) -> np.ndarray:
    # Signed distance to the decision boundary: positive = predicted member, monotone in the
    # predicted probability for logistic regression.
    return clf.decision_function(x)


def population_attack(member_features, nonmember_features, target_features, classifier: str = "logistic",
                      holdout: float = 0.5, max_train_per_class: int | None = None, seed: int = 0) -> dict[str, float]:
    """Train a membership classifier on members (retain) vs non-members (test), apply it to the
    targets (forget set).

    The non-members are split (seeded): a `holdout` fraction is kept out of training and serves as
    the negatives of the AUC and as the attack's false-positive rate; the rest train the attack
    against as many randomly drawn members (balanced classes, at most `max_train_per_class` each).
    holdout=0 trains on every non-member (SalUn's protocol); the AUC is then measured against the
    same non-members the attack was fit to.

    Returns:
      mia_score               fraction of targets predicted member (what avg_gap uses)
      mia_efficacy            1 − mia_score: SalUn's "MIA-Efficacy", fraction predicted non-member
      auc                     AUC of the attack's member score, targets vs held-out non-members
      heldout_member_rate     fraction of held-out non-members predicted member (the attack's FPR:
                              about what a model that never saw the targets gets as mia_score when
                              targets and test share a distribution)
      train_accuracy          the attack's accuracy on its own balanced training set
      n_train_per_class, n_targets, n_heldout
    Features: (N,) or (N, d) arrays, e.g. model_outputs(...)["loss"].
    """
    members, nonmembers, targets = map(_as_features, (member_features, nonmember_features, target_features))
    if not 0 <= holdout < 1:
        raise ConfigError("holdout must be in [0, 1)", expected="a fraction of the non-members", got=holdout)
    if len(members) < 1 or len(nonmembers) < 2:
        raise ConfigError("a population attack needs members and at least two non-members",
                          expected="retain and test features", got=f"{len(members)} members, {len(nonmembers)} non-members")
    rng = np.random.default_rng(derive_seed("population_attack", seed))
    order = rng.permutation(len(nonmembers))
    n_held = round(holdout * len(nonmembers))
    n_held = min(max(n_held, 1 if holdout > 0 else 0), len(nonmembers) - 1)
    held = nonmembers[order[:n_held]] if n_held else nonmembers
    train_non = nonmembers[order[n_held:]]
    n_train = min(len(members), len(train_non))
    if max_train_per_class is not None:
        n_train = min(n_train, int(max_train_per_class))
    train_mem = members[rng.choice(len(members), size=n_train, replace=False)]
    train_non = train_non[rng.choice(len(train_non), size=n_train, replace=False)]
    x = np.concatenate([train_mem, train_non])
    y = np.concatenate([np.ones(n_train), np.zeros(n_train)])
    clf = _make_classifier(classifier, seed)
    clf.fit(x, y)
    target_pred = clf.predict(targets) if len(targets) else np.zeros(0)
    mia_score = float(target_pred.mean()) if len(targets) else float("nan")
    auc = roc_metrics(_member_score(clf, targets), _member_score(clf, held), fprs=())["auc"] \
        if len(targets) else float("nan")
    return {"mia_score": mia_score, "mia_efficacy": 1.0 - mia_score, "auc": auc,
            "heldout_member_rate": float(clf.predict(held).mean()),
            "train_accuracy": float((clf.predict(x) == y).mean()),
            "n_train_per_class": float(n_train), "n_targets": float(len(targets)), "n_heldout": float(len(held))}


def population_attacks(member_outputs: Mapping[str, np.ndarray], nonmember_outputs: Mapping[str, np.ndarray],
                       target_outputs: Mapping[str, np.ndarray], features: Sequence[str] = DEFAULT_FEATURES,
                       classifiers: Sequence[str] = ("logistic",), holdout: float = 0.5,
                       max_train_per_class: int | None = None, seed: int = 0) -> dict[str, dict[str, float]]:
    """`population_attack` for every (classifier, feature) pair over model_outputs dicts of the
    retain set (members), the test set (non-members) and the forget set (targets).
    Returns {"<classifier>/<feature>": result}, e.g. "svc/correct_prob" is SalUn's attack."""
    results = {}
    for clf in classifiers:
        for feature in features:
            for name, outputs in (("member", member_outputs), ("non-member", nonmember_outputs),
                                  ("target", target_outputs)):
                if feature not in outputs:
                    raise ConfigError(f"the {name} outputs have no feature {feature!r}",
                                      expected=f"one of {sorted(outputs)}", got=feature)
            results[f"{clf}/{feature}"] = population_attack(
                member_outputs[feature], nonmember_outputs[feature], target_outputs[feature], clf, holdout,
                max_train_per_class, seed)
    return results


# -- tier 2: reference models ------------------------------------------------------------------


@dataclass
class ReferenceModels:
    """Models trained on random halves of a pool; masks[k, i] is True when pool example i was in
    model k's training set."""

    models: list[torch.nn.Module]
    masks: np.ndarray
    seed: int

    def __len__(self) -> int:
        return len(self.models)


def membership_masks(n_models: int, n_pool: int, seed: int = 0, fraction: float = 0.5) -> np.ndarray:
    """(n_models, n_pool) boolean masks. With n_models >= 2 every pool example is IN for exactly
    round(fraction·n_models) models (LiRA's construction), so each has both IN and OUT reference
    models when 0 < fraction < 1; a single model gets a random `fraction` of the pool."""
    if n_models < 1 or n_pool < 1:
        raise ConfigError("membership masks need at least one model and one pool example",
                          expected="n_models >= 1, n_pool >= 1", got=f"n_models={n_models}, n_pool={n_pool}")
    if not 0 < fraction < 1:
        raise ConfigError("fraction must be in (0, 1)", expected="the share of the pool each model trains on",
                          got=fraction)
    rng = np.random.default_rng(derive_seed("reference_masks", seed))
    if n_models == 1:
        mask = np.zeros((1, n_pool), dtype=bool)
        mask[0, rng.choice(n_pool, size=max(1, round(fraction * n_pool)), replace=False)] = True
        return mask
    n_in = min(max(round(fraction * n_models), 1), n_models - 1)
    order = rng.random((n_models, n_pool)).argsort(axis=0)
    return order < n_in


def train_reference_models(make_model: Callable[[], torch.nn.Module],
                           fit_fn: Callable[[torch.nn.Module, torch.Tensor, torch.Tensor, int], object],
                           inputs: torch.Tensor, targets: torch.Tensor, n_models: int, seed: int = 0,
                           fraction: float = 0.5) -> ReferenceModels:
    """Train `n_models` reference models, each on a random half (`fraction`) of the pool
    (inputs, targets), and record the membership masks.

    make_model(): a freshly initialised model; called under a fixed torch seed per model, so
    the initialisations are reproducible. fit_fn(model, x, y, seed): trains it in place (e.g.
    `lambda m, x, y, s: learn.fit(m, x, y, recipe, seed=s)`). The models are returned in eval
    mode. Cost: n_models trainings on half the pool; small models or subsets are the caller's
    choice.
    """
    targets = torch.as_tensor(targets)
    masks = membership_masks(n_models, len(targets), seed, fraction)
    models = []
    for k in range(n_models):
        idx = torch.from_numpy(np.flatnonzero(masks[k]))
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(derive_seed("reference_model", seed, k))
            model = make_model()
            fit_fn(model, inputs[idx], targets[idx], derive_seed("reference_fit", seed, k))
        model.eval()
        models.append(model)
    return ReferenceModels(models, masks, seed)


def reference_outputs(models: ReferenceModels | Sequence[torch.nn.Module], inputs: torch.Tensor,
                      targets, batch_size: int = 2048) -> dict[str, np.ndarray]:
    """model_outputs of every reference model stacked: each key maps to an (n_models, N) array."""
    models = models.models if isinstance(models, ReferenceModels) else list(models)
    per_model = [model_outputs(m, inputs, targets, batch_size) for m in models]
    return {k: np.stack([o[k] for o in per_model]) for k in per_model[0]}


def out_of_training_confidence(references, inputs: torch.Tensor, targets: torch.Tensor) -> np.ndarray:
    """q_i: the mean probability of the true label over the reference models that did not train on
    example i (`references`: ReferenceModels whose masks index `inputs`)."""
    masks = np.asarray(references.masks, dtype=bool)
    if masks.shape[1] != len(targets):
        raise ConfigError("the reference models' membership masks do not cover these examples",
                          expected=f"masks over {len(targets)} examples", got=f"masks over {masks.shape[1]}",
                          fix="pass the training set the reference models were drawn from, in its order")
    out = ~masks
    if not out.any(axis=0).all():
        raise ConfigError("some examples were in every reference model's training set",
                          expected="every example left out of at least one reference model",
                          got=f"{int((~out.any(axis=0)).sum())} examples never left out",
                          fix="train the reference models on a share of the pool below 1")
    probs = reference_outputs(references, inputs, targets)["correct_prob"]
    return (probs * out).sum(axis=0) / out.sum(axis=0)


def _check_reference(target, ref, ref_in, what: str):
    target = np.asarray(target, float).ravel()
    ref = np.atleast_2d(np.asarray(ref, float))
    if ref.shape[1] != len(target):
        raise ConfigError(f"reference signals of {what} do not match the target model's",
                          expected=f"(n_models, {len(target)})", got=f"shape {ref.shape}",
                          fix="pass reference_outputs(...)[key] for the same examples")
    if ref_in is None:
        ref_in = np.zeros(ref.shape, dtype=bool)
    ref_in = np.atleast_2d(np.asarray(ref_in, dtype=bool))
    if ref_in.shape != ref.shape:
        raise ConfigError(f"membership mask of {what} does not match its reference signals",
                          expected=f"shape {ref.shape}", got=f"shape {ref_in.shape}",
                          fix="pass refs.masks[:, pool_indices] of the same examples")
    return target, ref, ref_in


def _masked_mean(values: np.ndarray, mask: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    count = mask.sum(0)
    total = np.where(mask, values, 0.0).sum(0)
    with np.errstate(invalid="ignore", divide="ignore"):
        return total / np.maximum(count, 1), count


def _rmia_marginal(ref: np.ndarray, ref_in: np.ndarray, offline_a: float, online: bool) -> np.ndarray:
    """p(x) = mean over reference models of p(x|θ'), estimated as ½(p_IN + p_OUT).

    Offline (or where an example has no IN model) p_IN is approximated from p_OUT by the paper's
    linear relation p_IN ≈ a·p_OUT + (1 − a), i.e. p(x) = ½((1 + a)·p_OUT + (1 − a)). Where an
    example has no OUT model the relation is inverted (privacy-meter does the same)."""
    mean_out, n_out = _masked_mean(ref, ~ref_in)
    mean_in, n_in = _masked_mean(ref, ref_in)
    if offline_a > 0:
        mean_out = np.where(n_out > 0, mean_out, np.clip((mean_in - (1 - offline_a)) / offline_a, 0.0, 1.0))
    else:
        mean_out = np.where(n_out > 0, mean_out, mean_in)
    approx_in = offline_a * mean_out + (1 - offline_a)
    use_in = online & (n_in > 0)
    return 0.5 * (np.where(use_in, mean_in, approx_in) + mean_out)


def rmia_scores(target_x, ref_x, target_z, ref_z, ref_x_in=None, ref_z_in=None, online: bool = False,
                offline_a: float = 0.3, gamma: float = 1.0) -> np.ndarray:
    """RMIA membership scores (Zarifzadeh et al., "Low-Cost High-Power Membership Inference
    Attacks", 2024); larger = more likely a member of the target model.

        LR(x) = p(x|θ) / p(x),   p(x) = mean over reference models θ' of p(x|θ')
        score(x) = fraction of population samples z with LR(x) / LR(z) > gamma

    Signals are the correct-class probabilities p_y (model_outputs(...)["correct_prob"]):
    target_x (N,) and ref_x (n_models, N) for the audited examples, target_z (M,) and ref_z
    (n_models, M) for population samples z (non-members of the target, e.g. half of the test
    set). ref_*_in mark which reference models trained on each example (None: none did).
    offline (default): only OUT models, p(x) = ½((1 + a)·p_OUT(x) + (1 − a)) with a = offline_a
    (privacy-meter's default 0.3; the paper tunes a on a pair of reference models);
    online: p(x) = ½(p_IN(x) + p_OUT(x)) wherever an example has both.
    """
    target_x, ref_x, ref_x_in = _check_reference(target_x, ref_x, ref_x_in, "the audited examples")
    target_z, ref_z, ref_z_in = _check_reference(target_z, ref_z, ref_z_in, "the population samples")
    if not 0 <= offline_a <= 1:
        raise ConfigError("offline_a must be in [0, 1]", expected="RMIA's p_IN ≈ a·p_OUT + (1 − a) slope",
                          got=offline_a)
    if gamma <= 0:
        raise ConfigError("gamma must be positive", expected="the likelihood-ratio threshold (1 in the paper)",
                          got=gamma)
    if not len(target_z):
        raise ConfigError("RMIA needs population samples z", expected="at least one non-member example",
                          got="none")
    tiny = np.finfo(float).tiny
    ratio_x = target_x / np.maximum(_rmia_marginal(ref_x, ref_x_in, offline_a, online), tiny)
    ratio_z = np.sort(target_z / np.maximum(_rmia_marginal(ref_z, ref_z_in, offline_a, online), tiny))
    # LR(x)/LR(z) > gamma  <=>  ratio_z < ratio_x / gamma: a count by binary search, not an N x M matrix.
    return np.searchsorted(ratio_z, ratio_x / gamma, side="left") / len(ratio_z)


def lira_pooled_std(ref_phi, mask) -> float:
    """One σ for all examples: the within-example spread of φ over the reference models in
    `mask`, pooled with degrees-of-freedom correction, sqrt(Σ_i Σ_k (φ_ki − μ_i)² / Σ_i (n_i − 1)).
    Examples with a single model add nothing (their spread is unknown). NaN when no example has
    two models on this side."""
    ref_phi = np.atleast_2d(np.asarray(ref_phi, float))
    mask = np.asarray(mask, dtype=bool)
    mean, count = _masked_mean(ref_phi, mask)
    dof = np.maximum(count - 1, 0).sum()
    if dof == 0:
        return float("nan")
    return float(np.sqrt((np.where(mask, ref_phi - mean, 0.0) ** 2).sum() / dof))


def lira_scores(target_phi, ref_phi, ref_in=None, online: bool = False, fix_variance: bool = True,
                std_out: float | None = None, std_in: float | None = None, min_std: float = 1e-3) -> np.ndarray:
    """LiRA membership scores (Carlini et al., "Membership Inference Attacks From First
    Principles", 2022); larger = more likely a member.

    φ = log(p_y / (1 − p_y)) (model_outputs(...)["scaled_confidence"]), target_phi (N,),
    ref_phi (n_models, N), ref_in (n_models, N) marks IN reference models (None: all OUT).
    A Gaussian is fitted per example to the OUT models' φ (and the IN models' for online):
      offline: score = log Φ((φ − μ_out) / σ_out)   (one-sided test: φ above the OUT distribution)
      online:  score = log N(φ; μ_in, σ_in) − log N(φ; μ_out, σ_out)
    μ is the per-example mean. σ: with fix_variance (default; the paper's choice for few
    reference models) one value per side, `lira_pooled_std` over the examples of THIS call, so
    score the positives and negatives of an audit in one call (concatenated) or pass the same
    std_out / std_in to every call; without it, the per-example standard deviation (needs
    several models per example). σ is floored at min_std. Online needs an IN and an OUT model
    for every example.
    """
    from scipy.special import log_ndtr
    target_phi, ref_phi, ref_in = _check_reference(target_phi, ref_phi, ref_in, "the audited examples")

    def fit(mask: np.ndarray, side: str, given: float | None) -> tuple[np.ndarray, np.ndarray]:
        mean, count = _masked_mean(ref_phi, mask)
        if (count == 0).any():
            raise ConfigError(f"LiRA needs at least one {side} reference model per example",
                              expected=f"every example {side} for some reference model",
                              got=f"{int((count == 0).sum())} examples without one",
                              fix="train more reference models (membership_masks balances IN/OUT), "
                                  "or use the offline attack")
        if given is not None:
            std = np.full(len(mean), float(given))
        elif fix_variance:
            pooled = lira_pooled_std(ref_phi, mask)
            if np.isnan(pooled):
                raise ConfigError(f"cannot estimate the spread of φ over {side} reference models",
                                  expected=f"some example with two or more {side} reference models",
                                  got="one model per example at most",
                                  fix=f"train more reference models, or pass std_{side.lower()}=...")
            std = np.full(len(mean), pooled)
        else:
            std = np.sqrt((np.where(mask, ref_phi - mean, 0.0) ** 2).sum(0) / count)
        return mean, np.maximum(std, min_std)

    mu_out, sd_out = fit(~ref_in, "OUT", std_out)
    if not online:
        return log_ndtr((target_phi - mu_out) / sd_out)
    mu_in, sd_in = fit(ref_in, "IN", std_in)

    def log_normal(x, mu, sd):
        return -0.5 * ((x - mu) / sd) ** 2 - np.log(sd)

    return log_normal(target_phi, mu_in, sd_in) - log_normal(target_phi, mu_out, sd_out)


__all__ = [
    "CLASSIFIERS",
    "DEFAULT_FEATURES",
    "DEFAULT_FPRS",
    "ReferenceModels",
    "auc_interval",
    "lira_pooled_std",
    "lira_scores",
    "membership_masks",
    "population_attack",
    "population_attacks",
    "reference_outputs",
    "rmia_scores",
    "roc_metrics",
    "threshold_at_fpr",
    "tpr_at_fpr",
    "train_reference_models",
]
