"""The accuracy gate's worst-of-several-sessions rule (compile/accuracy.py `worst`)."""

from __future__ import annotations

from zesty.compile.accuracy import worst


def test_each_metric_keeps_its_worse_value():
    main = {"mean_cosine": 0.9990, "min_cosine": 0.9790}
    twin = {"mean_cosine": 0.9960, "min_cosine": 0.9805}
    # neither session's dict as a whole: the main session's min, the twin's mean
    assert worst([main, twin]) == {"mean_cosine": 0.9960, "min_cosine": 0.9790}


def test_lower_is_better_metrics_keep_the_larger_value():
    a = {"top1_agreement": 1.0, "max_abs_dprob": 0.01}
    b = {"top1_agreement": 0.99, "max_abs_dprob": 0.03}
    assert worst([a, b]) == {"top1_agreement": 0.99, "max_abs_dprob": 0.03}
