"""Mixture-ratio finder: proxy CPT runs over domain shares, fitted loss laws, a recommended share."""
