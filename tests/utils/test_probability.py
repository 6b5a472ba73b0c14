import numpy as np
from scipy.special import expit
from scipy.special import softmax as scipy_softmax

from hybridmednet.utils.probability import predictive_entropy, probabilities


def test_probabilities_match_scipy_with_temperature():
    logits = np.array([[2.0, 0.5, -1.0], [1000.0, 0.0, -1000.0]])
    np.testing.assert_allclose(probabilities(logits, False, 2.0), scipy_softmax(logits / 2.0, axis=1))
    np.testing.assert_allclose(probabilities(logits, True), expit(logits))
    assert np.isfinite(probabilities(logits, False)).all()  # no overflow at extreme logits


def test_predictive_entropy_is_normalised():
    assert predictive_entropy(np.full((1, 4), 0.25))[0] == 1.0
    assert predictive_entropy(np.array([[1.0, 0.0, 0.0]]))[0] < 1e-12
    assert np.isclose(predictive_entropy(np.array([[0.5, 0.5]]), multilabel=True)[0], 1.0)
