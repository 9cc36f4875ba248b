"""``python -m rankers.people``: the people FPR as its own service (the same as ``feedrank serve fpr-people``)."""

from services.fpr_service import main

if __name__ == "__main__":
    main("people")
