"""``python -m rankers.courses``: the courses FPR as its own service process."""

from services.fpr_service import main

if __name__ == "__main__":
    main("courses")
