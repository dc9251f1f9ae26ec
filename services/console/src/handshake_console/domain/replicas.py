"""One dashboard figure from several replicas of a service. Each pod is its own process, so pods' figures are
combined by what they mean, never by adding up whatever each pod says:

* a counter counts what its own process did since it started: the figure's increase is the sum, over pods, of
  each pod's increase since that same pod's previous scrape;
* a gauge the service computes from its database (outbox age, open dead letters, stuck orders) is one fact
  that every pod reports: the largest reading, never the sum. The largest rather than any one pod's, because
  a pod that has not refreshed it yet (or whose scanner does not run) shows an older or zero value;
* a mean (webhook ack latency) is the pods' total seconds over their total count, not a mean of means.

Readings are keyed by the pod's address."""

from __future__ import annotations

from collections.abc import Collection, Mapping

Readings = Mapping[str, float]


def pod_increase(before: float | None, now: float) -> float | None:
    """One pod's increase since its previous scrape. A counter that fell belongs to a new process (the pod
    restarted, or its address went to a new pod): all it counted happened since, so its value is the increase.

    A pod not scraped before has no increase yet (None): it counts from its second scrape. The console cannot
    tell a first reading built up since the last scrape from one built up over hours before it looked (every
    pod is new when the console itself starts), and counting it whole would show the pods' history as one
    interval's spike. In Kubernetes a pod is listed (and scraped) before it is ready for traffic, so its first
    reading is usually taken before it counts anything, and little or nothing is lost."""
    if before is None:
        return None
    return now - before if now >= before else now


def counter_increase(previous: Readings, current: Readings) -> float | None:
    """The figure's increase: the sum of the answering pods' own increases. None when no answering pod was
    scraped before, since then nothing is known about this interval."""
    found = [i for pod, now in current.items() if (i := pod_increase(previous.get(pod), now)) is not None]
    return sum(found) if found else None


def remembered(previous: Readings, current: Readings, present: Collection[str]) -> dict[str, float]:
    """What the next scrape's increases are measured from: each answering pod's new reading, and the last
    reading of a pod that is still there but did not answer this time, so what it counted meanwhile is
    counted once when it answers again. A pod no longer among the addresses is gone and forgotten: it
    contributes nothing."""
    return {**{pod: value for pod, value in previous.items() if pod in present}, **current}


def gauge_across_pods(current: Readings) -> float | None:
    return max(current.values()) if current else None


def mean_across_pods(totals: Mapping[str, tuple[float, float]]) -> float | None:
    """(sum, count) per pod -> the mean over every observation of every pod; 0 when none was observed."""
    if not totals:
        return None
    seconds = sum(s for s, _ in totals.values())
    count = sum(c for _, c in totals.values())
    return seconds / count if count else 0.0
