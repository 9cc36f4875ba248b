"""People you may know: graph candidates (friends of friends, common companies, LINE neighbours) ranked
by a calibrated click model trained on logged member-card impressions."""
