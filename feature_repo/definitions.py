"""Feast entities and feature views: the feature families X_i, X_t, X_ij and X_ik of the mixer.

Each view is written online by the streaming feature service. The Parquet sources are where the
offline store will live (paths relative to this repository, as Feast resolves them); the streaming
service does not append to them yet.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float32, Int64

member = Entity(
    name="member",
    join_keys=["member_id"],
    value_type=ValueType.STRING,
    description="A member who requests feeds and acts on items",
)
item = Entity(
    name="item",
    join_keys=["item_id"],
    value_type=ValueType.STRING,
    description="A feed item: post, job, course or member card",
)
actor = Entity(
    name="actor",
    join_keys=["actor_id"],
    value_type=ValueType.STRING,
    description="Who created an item: a member or a company page",
)
item_type = Entity(
    name="item_type", join_keys=["item_type"], value_type=ValueType.STRING, description="post, job, course or member"
)

_TTL = timedelta(days=30)


def _source(view: str) -> FileSource:
    return FileSource(
        name=f"{view}_source", path=f"../.feedrank/feast/offline/{view}.parquet", timestamp_field="event_timestamp"
    )


def _counts(ctr: bool = True) -> list[Field]:
    fields = [Field(name="impressions", dtype=Int64), Field(name="engagements", dtype=Int64)]
    if ctr:
        fields.append(Field(name="ctr", dtype=Float32))
    return fields


# X_i: how much the member engages with the feed at all.
member_activity = FeatureView(
    name="member_activity",
    entities=[member],
    ttl=_TTL,
    schema=_counts(),
    source=_source("member_activity"),
    online=True,
    tags={"family": "X_i"},
)
# X_t: the item's popularity.
item_popularity = FeatureView(
    name="item_popularity",
    entities=[item],
    ttl=_TTL,
    schema=_counts(),
    source=_source("item_popularity"),
    online=True,
    tags={"family": "X_t"},
)
# X_ij: the member's history with the item's actor.
member_actor = FeatureView(
    name="member_actor",
    entities=[member, actor],
    ttl=_TTL,
    schema=_counts(),
    source=_source("member_actor"),
    online=True,
    tags={"family": "X_ij"},
)
# X_ik: the member's appetite for this type of item.
member_type = FeatureView(
    name="member_type",
    entities=[member, item_type],
    ttl=_TTL,
    schema=_counts(),
    source=_source("member_type"),
    online=True,
    tags={"family": "X_ik"},
)

ENTITIES = [member, item, actor, item_type]
FEATURE_VIEWS = [member_activity, item_popularity, member_actor, member_type]
