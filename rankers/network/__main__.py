"""The network FPR's service entry: ``python -m rankers.network`` (same as ``feedrank serve fpr-network``)."""

from services.fpr_service import main

if __name__ == "__main__":
    main("network")
