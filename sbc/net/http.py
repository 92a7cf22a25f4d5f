"""The operator's HTTP endpoint: Prometheus metrics and a liveness check.

    GET /metrics  the registry in the Prometheus text format, or OpenMetrics
                  when the scraper asks for it; gzip when accepted
    GET /healthz  "ok\\n"
    anything else 404

Scrapes are rendered synchronously on the reactor thread: the registry is
small and in memory, so a thread pool would cost more than it saves.
"""

import copy

from prometheus_client.exposition import choose_encoder
from twisted.web import pages
from twisted.web.resource import EncodingResourceWrapper, Resource
from twisted.web.server import GzipEncoderFactory, Site

__all__ = ["HealthResource", "MetricsResource", "QuietSite", "metrics_site"]


class _WithoutCreated:
    """A registry view that leaves out counters' `_created` samples.

    The classic text format has no place for them, so prometheus_client
    prints each as an extra gauge series; Prometheus does not need them and
    they double the series count of every labelled counter.
    """

    def __init__(self, registry):
        self._registry = registry

    def collect(self):
        for metric in self._registry.collect():
            created = metric.name + "_created"
            if any(s.name == created for s in metric.samples):
                metric = copy.copy(metric)
                metric.samples = [s for s in metric.samples if s.name != created]
            yield metric


class _Page(Resource):
    """A resource with no children: anything below it is 404."""

    def getChild(self, path, request):
        return pages.notFound()


class MetricsResource(_Page):
    """Renders a prometheus_client registry."""

    def __init__(self, registry):
        super().__init__()
        self._registry = registry

    def render_GET(self, request):
        accept = (request.getHeader("accept") or "").strip()
        encoder, content_type = choose_encoder(accept)
        source = self._registry
        if content_type.startswith("text/plain"):
            source = _WithoutCreated(source)
        request.setHeader("content-type", content_type)
        return encoder(source)


class HealthResource(_Page):
    """Answers 200 "ok" while the reactor is turning."""

    def render_GET(self, request):
        request.setHeader("content-type", "text/plain; charset=utf-8")
        return b"ok\n"


class _Root(_Page):
    """Routes /metrics and /healthz; everything else, / included, is 404."""

    def render(self, request):
        return pages.notFound().render(request)


class QuietSite(Site):
    """No access log: a scrape every few seconds is not news (the control
    socket logs what it changes itself)."""

    noisy = False

    def log(self, request):
        pass


def metrics_site(registry):
    """A twisted.web Site serving `registry` on /metrics and a /healthz check."""
    root = _Root()
    root.putChild(
        b"metrics", EncodingResourceWrapper(MetricsResource(registry), [GzipEncoderFactory()])
    )
    root.putChild(b"healthz", HealthResource())
    site = QuietSite(root)
    site.displayTracebacks = False
    return site
