package com.mme.mms;

import java.io.IOException;
import java.nio.charset.StandardCharsets;
import java.util.concurrent.atomic.AtomicBoolean;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * GET /metrics on the serving port: the container's per-model series in Prometheus text format (see
 * ContainerMetrics). Answers 503 until the per-connection handler is in place, and `serve` waits for
 * the 200, so no client connection goes unseen. Also starts the opt-in EMF writer.
 */
@Endpoint(
        urlPattern = "metrics",
        endpointType = EndpointTypes.MANAGEMENT,
        description = "per-model metrics, Prometheus text format")
public class MetricsEndpoint extends ModelServerEndpoint {

    private static final AtomicBoolean STARTED = new AtomicBoolean();
    /** The bench's control arm (bench/metrics_overhead.py): no per-connection handler at all. */
    static final boolean HANDLER_OFF = "off".equals(System.getenv("_MME_METRICS_HANDLER"));

    public MetricsEndpoint() {
        if (STARTED.compareAndSet(false, true)) {
            if (!HANDLER_OFF) {
                ChannelHook.start();
            }
            EmfWriter.startIfConfigured();
        }
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        if (!HANDLER_OFF && !ChannelHook.installed()) {
            rsp.setStatus(503, "Service Unavailable");
            rsp.setContentType("text/plain; charset=utf-8");
            rsp.getOutputStream().write("metrics are not installed yet\n".getBytes(StandardCharsets.UTF_8));
            return;
        }
        rsp.setContentType("text/plain; version=0.0.4; charset=utf-8");
        ContainerMetrics.render(rsp.getOutputStream());
    }
}
