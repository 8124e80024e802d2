"""The service platform: requests, analysis, crowdsourcing, contracts, verification."""
