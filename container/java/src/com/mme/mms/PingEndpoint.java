package com.mme.mms;

import com.amazonaws.ml.mms.http.ErrorResponse;
import com.amazonaws.ml.mms.http.StatusResponse;
import com.amazonaws.ml.mms.util.JsonUtils;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.amazonaws.ml.mms.wlm.WorkLoadManager;
import java.io.IOException;
import java.nio.charset.StandardCharsets;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * /ping in place of MMS's own: 503 until the start-up warm-up is over (Warmup) and our per-connection
 * handlers are in place (MetricsEndpoint.ready), then MMS's answer, 200
 * {"status": "Healthy" | "Partial Healthy" | "Unhealthy"} counted as ModelManager.workerStatus counts.
 *
 * <p>MMS looks a plugin endpoint up before its built-in ping, and plugins are in place before it listens;
 * the request guard is not (it joins the connections of a listener MMS has already opened), so a gate there
 * let a ping that came early answer 200 while the warm-up still ran. HEAD and OPTIONS, which MMS does not
 * hand to plugins, are answered by the request guard from status().
 */
@Endpoint(urlPattern = "ping", endpointType = EndpointTypes.INFERENCE, description = "health check")
public class PingEndpoint extends ModelServerEndpoint {

    static final String WARMING = "The container is starting: its load path is warming up";
    static final String HOOKING = "The container is starting: its request handlers are not in place yet";

    /**
     * The status a ping gets now: 503 also until the request guard and metrics see every new connection,
     * since a client told "ready" opens its connections at once, and one opened earlier goes unguarded.
     */
    static int status() {
        return starting() == null ? 200 : 503;
    }

    private static String starting() {
        if (!Warmup.done()) {
            return WARMING;
        }
        return MetricsEndpoint.ready() ? null : HOOKING;
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        answer(rsp);
    }

    @Override
    public void doPost(Request req, Response rsp, Context ctx) throws IOException {
        answer(rsp);
    }

    @Override
    public void doPut(Request req, Response rsp, Context ctx) throws IOException {
        answer(rsp);
    }

    @Override
    public void doDelete(Request req, Response rsp, Context ctx) throws IOException {
        answer(rsp);
    }

    private static void answer(Response rsp) throws IOException {
        rsp.setContentType("application/json");
        Object body;
        String why = starting();
        if (why != null) {
            rsp.setStatus(503, "Service Unavailable");
            body = new ErrorResponse(503, "ServiceUnavailableException", why);
        } else {
            body = new StatusResponse(health());
        }
        rsp.getOutputStream().write((JsonUtils.GSON_PRETTY.toJson(body) + "\n").getBytes(StandardCharsets.UTF_8));
    }

    private static String health() {
        WorkLoadManager wlm = GuardedWorkLoadManager.current();
        if (wlm == null) {
            return "Healthy"; // our manager not in place: serve refuses to start (GET /mme says so)
        }
        int working = 0;
        int scaled = 0;
        for (Model m : ModelManager.getInstance().getModels().values()) {
            scaled += m.getMinWorkers();
            working += wlm.getNumRunningWorkers(m.getModelName());
        }
        if (working > 0 && working < scaled) {
            return "Partial Healthy";
        }
        return working == 0 && scaled > 0 ? "Unhealthy" : "Healthy";
    }
}
