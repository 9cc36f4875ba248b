"""Feast entities and feature views: one view per feature family of X_it.

The views are generated from ``features.families.VIEWS`` (the single definition of what each family
holds). The streaming feature service writes them online (Redis) and appends every written row to
the offline store, Parquet files under ``offline/VIEW/`` of the project's Feast folder; the paths
below are relative to this repository for the default project, as Feast resolves them.
"""

from __future__ import annotations

from datetime import timedelta

from feast import Entity, FeatureView, Field, FileSource, ValueType
from feast.types import Float64

from features.families import VIEW_BY_NAME, VIEWS, View

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
ENTITY_BY_KEY = {e.join_key: e for e in (member, item, actor, item_type)}
ENTITIES = list(ENTITY_BY_KEY.values())
TTL = timedelta(days=30)


def feature_view(view: View) -> FeatureView:
    # Every feature is a Float64 (counts too): fixed-size values that the fast reader decodes in bulk.
    schema = [Field(name=c, dtype=Float64) for c in view.stored]
    source = FileSource(
        name=f"{view.name}_source",
        path=f"../.feedrank/feast/feedrank/offline/{view.name}",
        timestamp_field="event_timestamp",
    )
    return FeatureView(
        name=view.name,
        entities=[ENTITY_BY_KEY[k] for k in view.join_keys],
        ttl=TTL,
        schema=schema,
        source=source,
        online=True,
        description=view.doc,
        tags={"family": view.family},
    )


# Module-level names, as Feast's `feast apply` discovers definitions by scanning module attributes.
member_stats = feature_view(VIEW_BY_NAME["member_stats"])
item_stats = feature_view(VIEW_BY_NAME["item_stats"])
actor_stats = feature_view(VIEW_BY_NAME["actor_stats"])
member_actor = feature_view(VIEW_BY_NAME["member_actor"])
member_type = feature_view(VIEW_BY_NAME["member_type"])
member_actor_type = feature_view(VIEW_BY_NAME["member_actor_type"])
member_item = feature_view(VIEW_BY_NAME["member_item"])
FEATURE_VIEWS = [member_stats, item_stats, actor_stats, member_actor, member_type, member_actor_type, member_item]
assert [fv.name for fv in FEATURE_VIEWS] == [v.name for v in VIEWS], "a family without its Feast view"
