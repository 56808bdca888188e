"""Who a campaign reaches: segments and exclusions as one SQL SELECT over contacts.

The same SELECT counts the audience (`preview`) and feeds `INSERT ... SELECT` when a run is
planned, so 100,000 recipients are planned by the database in one statement, not row by row.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, String, and_, case, cast, exists, false, func, literal, not_, null, or_, select, true

from bot.campaigns.campaign import Audience, Campaign, Segment
from bot.campaigns.models import SENT, AnnouncementDelivery, AnnouncementOptOut, AnnouncementRun
from bot.funnel.models import FunnelEvent
from bot.offers.models import CouponBatch, CouponCode, GroupInviteRow, GroupPool, PoolGroup
from bot.storage.models import Contact, ContactTag, MessageLog
from bot.wecom.models import WelcomeRecord

#: OA customer-service messages may only be sent this long after the customer's last message.
OA_WINDOW = timedelta(hours=48)
OUTSIDE_WINDOW = "outside the 48-hour customer-service window"

_contacts = Contact.__table__
_tags = ContactTag.__table__


def _has_tag(tags: list[str], now: datetime) -> ColumnElement[bool]:
    return exists().where(
        _tags.c.contact_id == _contacts.c.id,
        _tags.c.tag.in_(tags),
        or_(_tags.c.expires_at.is_(None), _tags.c.expires_at > now),
    )


def _holds_coupon(batches: list[str], now: datetime, *, redeemed: bool) -> ColumnElement[bool]:
    codes, batch_table = CouponCode.__table__, CouponBatch.__table__
    state = (
        [codes.c.status == "redeemed"]
        if redeemed
        else [codes.c.status == "issued", or_(codes.c.expires_at.is_(None), codes.c.expires_at > now)]
    )
    return exists().where(
        codes.c.channel == _contacts.c.channel,
        codes.c.account == _contacts.c.account,
        codes.c.external_id == _contacts.c.external_id,
        codes.c.batch_id == batch_table.c.id,
        batch_table.c.name.in_(batches),
        *state,
    )


def _in_pools(pools: list[str]) -> ColumnElement[bool]:
    """Handed a pool's group invite, or joined one of its WeCom groups (funnel step group_joined)."""
    invites, pool_table, groups, steps = (GroupInviteRow.__table__, GroupPool.__table__, PoolGroup.__table__,
                                          FunnelEvent.__table__)
    invited = exists().where(
        invites.c.pool_id == pool_table.c.id, pool_table.c.name.in_(pools),
        invites.c.channel == _contacts.c.channel, invites.c.account == _contacts.c.account,
        invites.c.external_id == _contacts.c.external_id,
    )
    # group_joined's detail is JSON written by bot.funnel.steps (json.dumps: '{"chat_id": "…"}').
    joined = exists().where(
        steps.c.step == "group_joined", steps.c.channel == _contacts.c.channel,
        steps.c.account == _contacts.c.account, steps.c.external_id == _contacts.c.external_id,
        groups.c.pool_id == pool_table.c.id, pool_table.c.name.in_(pools), groups.c.external_group_id.is_not(None),
        steps.c.detail.contains(literal('"chat_id": "') + groups.c.external_group_id + literal('"')),
    )
    return or_(invited, joined)


def _conditions(rule: Segment | Audience, now: datetime) -> list[ColumnElement[bool]]:
    conditions: list[ColumnElement[bool]] = []
    if isinstance(rule, Segment):
        if rule.tags_any:
            conditions.append(_has_tag(rule.tags_any, now))
        conditions += [_has_tag([tag], now) for tag in rule.tags_all]
        if rule.joined_within_days:
            conditions.append(_contacts.c.first_seen >= now - timedelta(days=rule.joined_within_days))
        if rule.joined_before_days:
            conditions.append(_contacts.c.first_seen < now - timedelta(days=rule.joined_before_days))
    if rule.tags_none:
        conditions.append(not_(_has_tag(rule.tags_none, now)))
    if rule.source_channels:
        conditions.append(_contacts.c.source_channel.in_(rule.source_channels))
    if rule.active_within_days:
        conditions.append(_contacts.c.last_seen >= now - timedelta(days=rule.active_within_days))
    if rule.coupons_unredeemed:
        conditions.append(_holds_coupon(rule.coupons_unredeemed, now, redeemed=False))
    if rule.coupons_none:
        conditions.append(not_(_holds_coupon(rule.coupons_none, now, redeemed=False)))
    if rule.coupons_redeemed:
        conditions.append(_holds_coupon(rule.coupons_redeemed, now, redeemed=True))
    if rule.group_pools_in:
        conditions.append(_in_pools(rule.group_pools_in))
    if rule.group_pools_not_in:
        conditions.append(not_(_in_pools(rule.group_pools_not_in)))
    return conditions


def wecom_sender_expression() -> ColumnElement[Any]:
    """The staff member who last added the WeCom customer (their welcome), or NULL."""
    welcomes = WelcomeRecord.__table__
    return (
        select(welcomes.c.staff_userid)
        .where(welcomes.c.external_userid == _contacts.c.external_id, welcomes.c.staff_userid != "")
        .order_by(welcomes.c.created_at.desc(), welcomes.c.id.desc())
        .limit(1)
        .scalar_subquery()
    )


def segment_expression(campaign: Campaign, now: datetime) -> ColumnElement[Any]:
    """The first segment each contact matches (NULL: none)."""
    whens = [(and_(true(), *_conditions(segment, now)), literal(segment.name)) for segment in campaign.audience.segments]
    return case(*whens, else_=None)


def last_inbound_expression() -> ColumnElement[Any]:
    messages = MessageLog.__table__
    return (
        select(func.max(messages.c.created_at))
        .where(
            messages.c.channel == _contacts.c.channel,
            messages.c.external_id == _contacts.c.external_id,
            messages.c.direction == "in",
        )
        .scalar_subquery()
    )


def audience_query(campaign: Campaign, now: datetime) -> Select[Any]:
    """(contact_id, segment, last_inbound_at, sender) of everyone the campaign reaches now (sender: WeCom only)."""
    deliveries = AnnouncementDelivery.__table__
    runs = AnnouncementRun.__table__
    optouts = AnnouncementOptOut.__table__
    where: list[ColumnElement[bool]] = [
        _contacts.c.channel == campaign.channel,
        _contacts.c.following == true(),
        not_(exists().where(optouts.c.contact_id == _contacts.c.id)),
        *_conditions(campaign.audience, now),
    ]
    hours = campaign.exclude.contacted_within_hours
    if hours:
        where.append(
            not_(
                exists().where(
                    deliveries.c.contact_id == _contacts.c.id,
                    deliveries.c.status == SENT,
                    deliveries.c.updated_at >= now - timedelta(hours=hours),
                    runs.c.id == deliveries.c.run_id,
                    runs.c.campaign != campaign.name,
                )
            )
        )
    sender = wecom_sender_expression() if campaign.channel == "wecom" else cast(null(), String(64))
    inner = (
        select(
            _contacts.c.id.label("contact_id"),
            segment_expression(campaign, now).label("segment"),
            last_inbound_expression().label("last_inbound_at"),
            sender.label("sender"),
        )
        .where(*where)
        .subquery("audience")
    )
    return select(inner.c.contact_id, inner.c.segment, inner.c.last_inbound_at, inner.c.sender).where(
        inner.c.segment.is_not(None)
    )


def window_open(last_inbound_at: ColumnElement[Any], channel: str, now: datetime) -> ColumnElement[bool]:
    if channel != "wechat_oa":
        return true()
    return and_(last_inbound_at.is_not(None), last_inbound_at >= now - OA_WINDOW) if channel else false()
