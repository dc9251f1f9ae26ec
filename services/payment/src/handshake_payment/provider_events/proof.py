"""Provider facts are applied only on the provider's word, never on the word of whoever wrote to the topic.

A provider.stripe.event is believed when it carries the webhook delivery Stripe signed (sealed by
webhook-ingest, see handshake_shared.events.provider) and the signature verifies with one of our endpoint
secrets, or, when it carries none (the gap scan fetched it from the API, or no configured secret signed it
any more), when the provider still has an event with that id. Either way the event that is applied is the one
the proof contains or the provider returned: the normalised fields sent alongside are never read, so they
cannot be altered to move money.

The signature's age is not checked: webhook-ingest checked it at the edge, a delivery may wait on the topic
(or be replayed by support) long after it was signed, and applying an event twice changes nothing (inbox,
attempt state machine, provider ids).

A refusal is final for that message: counted by reason, then dead-lettered with nothing applied. A provider
that cannot be reached while an event is confirmed is an outage, not a refusal: the error propagates and
the consumer retries, then leaves the message on the broker."""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

import stripe
import structlog

from handshake_payment import metrics
from handshake_payment.stripe_gateway import StripeGateway
from handshake_shared.consumer import PoisonMessage
from handshake_shared.events.provider import ProviderStripeEvent, open_delivery

log = structlog.get_logger("provider_proof")


# Stripe event ids are evt_ and letters, digits or underscores; anything else is not asked for in a URL
_EVENT_ID = re.compile(r"evt_[A-Za-z0-9_]{1,250}")


class ProviderEventRefused(PoisonMessage):
    def __init__(self, reason: str, detail: str) -> None:
        super().__init__(f"provider event refused ({reason}): {detail}")
        self.reason = reason


def _refuse_constant(name: str) -> Any:
    raise ValueError(f"{name} is not valid JSON")


class ProviderProof:
    def __init__(self, webhook_secrets: Sequence[str], gateway: StripeGateway) -> None:
        self.secrets = list(webhook_secrets)
        self.gateway = gateway

    async def verified(self, p: ProviderStripeEvent) -> ProviderStripeEvent:
        """The event the provider really sent, normalised like webhook-ingest does (client secrets removed,
        no proof attached); raises ProviderEventRefused when nothing shows the provider sent it."""
        if p.signed_delivery is not None:
            event, proof = self._from_signature(p), "signature"
        else:
            event, proof = await self._from_provider(p), "provider"
        try:
            verified = ProviderStripeEvent.of(event)
        except ValueError:
            raise self._refused(p, "not_an_event", "the proven body is not a Stripe event") from None
        if verified.model_dump(exclude={"signed_delivery"}) != p.model_dump(exclude={"signed_delivery"}):
            # harmless (only the proven event is applied) but someone or something rewrote the message
            log.warning(
                "forwarded fields differ from the proven provider event",
                provider_event_id=verified.provider_event_id,
                forwarded_provider_event_id=p.provider_event_id,
                provider_type=verified.provider_type,
                proof=proof,
            )
        metrics.PROVIDER_EVENTS_VERIFIED.labels(proof).inc()
        return verified

    def _from_signature(self, p: ProviderStripeEvent) -> dict[str, Any]:
        assert p.signed_delivery is not None
        opened = open_delivery(p.signed_delivery, self.secrets)
        if opened is None:
            raise self._refused(p, "unsealed", "no webhook endpoint secret opens the sealed delivery")
        body, header, _ = opened
        for secret in self.secrets:
            try:
                stripe.WebhookSignature.verify_header(body, header, secret, tolerance=None)
                break
            except stripe.SignatureVerificationError:
                continue
            except UnicodeDecodeError:
                raise self._refused(p, "signature_mismatch", "the signed body is not UTF-8") from None
        else:
            raise self._refused(p, "signature_mismatch", "the Stripe-Signature does not verify the body")
        try:
            event = json.loads(body, parse_constant=_refuse_constant)
        except ValueError:
            raise self._refused(p, "not_an_event", "the signed body is not JSON") from None
        if not isinstance(event, dict):
            raise self._refused(p, "not_an_event", "the signed body is not a JSON object")
        return event

    async def _from_provider(self, p: ProviderStripeEvent) -> dict[str, Any]:
        if not _EVENT_ID.fullmatch(p.provider_event_id):
            raise self._refused(p, "malformed_id", "an unsigned event whose id is not a Stripe event id")
        # an outage raises here: the message is retried and left on the broker, not refused
        event = await self.gateway.retrieve_event(p.provider_event_id)
        if event is None:
            raise self._refused(p, "unknown_at_provider", "an unsigned event the provider does not have")
        if event.get("object") != "event" or event.get("id") != p.provider_event_id:
            raise self._refused(p, "unknown_at_provider", "the provider answered with something else")
        return event

    def _refused(self, p: ProviderStripeEvent, reason: str, detail: str) -> ProviderEventRefused:
        metrics.PROVIDER_EVENTS_REFUSED.labels(reason).inc()
        # the forwarded fields are only claims: logged to find who wrote them, never applied
        log.error(
            "provider event refused: no proof the provider sent it",
            reason=reason,
            claimed_provider_event_id=p.provider_event_id[:100],
            claimed_type=p.provider_type[:100],
            claimed_order_id=(p.order_id or "")[:100],
        )
        return ProviderEventRefused(reason, detail)
