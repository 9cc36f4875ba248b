"""Jobs FPR: job postings matched to the member's profile."""
