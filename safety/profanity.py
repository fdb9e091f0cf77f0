"""alt-profanity-check's shipped model (a TF-IDF vectorizer and five sigmoid-calibrated linear SVMs),
evaluated directly: the same probabilities as `profanity_check.predict_prob` without scikit-learn's
per-call validation (~0.5 ms instead of ~3-8 ms a message). Checked against the package at load."""

from __future__ import annotations

import numpy as np


class ProfanityModel:
    def __init__(self):
        from profanity_check import predict_prob
        from profanity_check.profanity_check import model, vectorizer

        self._vectorizer = vectorizer
        calibrated = model.calibrated_classifiers_
        self._weights = np.stack([np.ravel(c.estimator.coef_) for c in calibrated]).T.astype(np.float64)
        self._bias = np.array([float(np.ravel(c.estimator.intercept_)[0]) for c in calibrated])
        self._a = np.array([c.calibrators[0].a_ for c in calibrated])
        self._b = np.array([c.calibrators[0].b_ for c in calibrated])
        probe = ["you are a stupid idiot", "my essay is about the war", "what the hell is this shit"]
        if not np.allclose(self.predict(probe), predict_prob(probe), atol=1e-6):
            self.predict = lambda texts: np.asarray(predict_prob(texts), dtype=np.float64)  # the package's own

    def predict(self, texts: list[str]) -> np.ndarray:
        decision = self._vectorizer.transform(texts) @ self._weights + self._bias
        return (1.0 / (1.0 + np.exp(self._a * decision + self._b))).mean(axis=1)
