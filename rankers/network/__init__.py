"""Network activity (FollowFeed): recent posts of the member's connections and follows."""
