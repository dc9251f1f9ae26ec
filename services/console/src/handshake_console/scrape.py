"""Every replica's /metrics, not whichever pod a Service address happens to pick. A service's metrics address
names a host that resolves to each of its pods (in Kubernetes a headless Service); it is resolved again on
every scrape, so pods that come and go are followed, and each address is asked in turn with the host's own
name in the Host header (and as the TLS server name for https). In development the address is 127.0.0.1: one
pod, as before."""

from __future__ import annotations

import asyncio
import socket
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field

import httpx

Resolve = Callable[[str, int], Awaitable[list[str]]]


async def resolve_addresses(host: str, port: int) -> list[str]:
    """Every address of `host`, each once and sorted, so the same pods come first on every scrape and a bound
    on their number cuts off the same ones."""
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def pod_label(address: str, port: int) -> str:
    return f"[{address}]:{port}" if ":" in address else f"{address}:{port}"


@dataclass
class PodScrape:
    # every pod the name resolved to that was asked (the bound applied), answering or not
    pods: list[str] = field(default_factory=list)
    # the /metrics text of each pod that answered
    texts: dict[str, str] = field(default_factory=dict)
    # why each other pod gave nothing
    failures: dict[str, str] = field(default_factory=dict)
    # addresses beyond the bound, not asked
    left_out: int = 0


class PodScraper:
    def __init__(
        self,
        urls: dict[str, str | None],
        http: httpx.AsyncClient,
        *,
        resolve: Resolve = resolve_addresses,
        max_pods: int = 32,
        timeout: float = 5.0,
    ) -> None:
        self.urls = urls
        self.http = http
        self.resolve = resolve
        self.max_pods = max_pods
        self.timeout = timeout

    async def __call__(self, service: str) -> PodScrape | None:
        """None when the service has no address; raises when its name cannot be resolved."""
        base = self.urls.get(service)
        if not base:
            return None
        url = httpx.URL(base.rstrip("/") + "/metrics")
        port = url.port or (443 if url.scheme == "https" else 80)
        addresses = await asyncio.wait_for(self.resolve(url.host, port), self.timeout)
        asked = addresses[: self.max_pods]
        found = PodScrape(left_out=len(addresses) - len(asked))
        answers = await asyncio.gather(*(self._one(url, address) for address in asked), return_exceptions=True)
        for address, answer in zip(asked, answers, strict=True):
            pod = pod_label(address, port)
            found.pods.append(pod)
            if isinstance(answer, str):
                found.texts[pod] = answer
            elif isinstance(answer, httpx.HTTPStatusError):
                found.failures[pod] = f"answered {answer.response.status_code}"
            elif isinstance(answer, Exception):
                found.failures[pod] = type(answer).__name__
            else:
                raise answer  # cancellation and the like are not a pod's failure
        return found

    async def _one(self, url: httpx.URL, address: str) -> str:
        # the pod is reached by its address, and told the name it was meant by, like a request to the name
        headers = {"Host": url.netloc.decode("ascii")}
        extensions = {"sni_hostname": url.host} if url.scheme == "https" else {}
        request = self.http.get(
            url.copy_with(host=address), headers=headers, timeout=self.timeout, extensions=extensions
        )
        response = await asyncio.wait_for(request, self.timeout)
        response.raise_for_status()
        return response.text
