"""``python -m rankers.jobs``: the jobs FPR as its own service (the same process as ``feedrank serve fpr-jobs``)."""

from services.fpr_service import main

if __name__ == "__main__":
    main("jobs")
