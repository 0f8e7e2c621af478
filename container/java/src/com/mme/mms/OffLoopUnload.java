package com.mme.mms;

import com.amazonaws.ml.mms.http.ErrorResponse;
import com.amazonaws.ml.mms.http.StatusResponse;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.amazonaws.ml.mms.wlm.WorkLoadManager;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpMethod;
import io.netty.handler.codec.http.HttpResponseStatus;
import io.netty.handler.codec.http.QueryStringDecoder;
import io.netty.util.ReferenceCountUtil;
import java.lang.reflect.Field;
import java.util.Map;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.Executors;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Runs `DELETE /models/{name}` off Netty's event loop. MMS unregisters on the thread that read the
 * request, and the unload waits for the request inside the model's worker (GuardedWorkLoadManager, up
 * to the response timeout): every other connection on that event loop, `/ping` included, waited with
 * it (2 of 8 fresh pings took 58.8 s). Here the same ModelManager call runs on a pool thread and its
 * answer (MMS's own statuses and messages) is written back on the channel. Later requests on that
 * connection wait for it in InOrderAnswers, in front of this.
 */
final class OffLoopUnload {

    private static final Logger logger = LoggerFactory.getLogger(OffLoopUnload.class);
    static final AtomicLong OFFLOADED = new AtomicLong();
    private static final long POLL_MS = 2;
    /** Past MMS's own limit for starting a model's backend (a minute), unload whatever is there. */
    private static final long REGISTRATION_WAIT_MS = 65_000;
    private static final ExecutorService POOL =
            Executors.newCachedThreadPool(
                    r -> {
                        Thread t = new Thread(r, "mme-unload");
                        t.setDaemon(true);
                        return t;
                    });

    private OffLoopUnload() {}

    /** True when msg was taken here (an unload started); else MMS handles it. */
    static boolean take(ChannelHandlerContext ctx, Object msg) {
        if (!(msg instanceof FullHttpRequest)) {
            return false;
        }
        FullHttpRequest req = (FullHttpRequest) msg;
        if (req.method() != HttpMethod.DELETE || !req.decoderResult().isSuccess()) {
            return false;
        }
        String[] segments = new QueryStringDecoder(req.uri()).path().split("/");
        if (segments.length != 3 || !"models".equals(segments[1]) || segments[2].isEmpty()) {
            return false; // as MMS's ManagementRequestHandler routes an unregister
        }
        String name = segments[2];
        ReferenceCountUtil.release(req);
        OFFLOADED.incrementAndGet();
        // Answers go out through the whole pipeline, as MMS's own (its handler is the last one).
        ChannelHandlerContext last = ctx.pipeline().lastContext();
        POOL.execute(() -> {
            try {
                answer(last, name);
            } catch (RuntimeException e) {
                logger.warn("unload of {} failed", name, e);
                NettyUtils.sendJsonResponse(
                        last,
                        new ErrorResponse(500, "InternalServerException", "Failed to unregister model"),
                        HttpResponseStatus.INTERNAL_SERVER_ERROR);
            }
        });
        return true;
    }

    /** ManagementRequestHandler.handleUnregisterModel's answers, from a pool thread. */
    private static void answer(ChannelHandlerContext ctx, String name) {
        HttpResponseStatus status = unregister(name);
        if (status == HttpResponseStatus.NOT_FOUND) {
            error(ctx, status, "ModelNotFoundException", "Model not found: " + name);
        } else if (status == HttpResponseStatus.INTERNAL_SERVER_ERROR) {
            error(ctx, status, "InternalServerException", "Interrupted while cleaning resources: " + name);
        } else if (status == HttpResponseStatus.REQUEST_TIMEOUT) {
            error(ctx, status, "RequestTimeoutException", "Timed out while cleaning resources: " + name);
        } else {
            NettyUtils.sendJsonResponse(ctx, new StatusResponse("Model \"" + name + "\" unregistered"));
        }
    }

    /**
     * ModelManager.unregisterModel, but it removes only a model whose registration is over (see
     * Registrations): one read while no registration of the name ran, removed only if still the one.
     */
    static HttpResponseStatus unregister(String name) {
        ModelManager manager = ModelManager.getInstance();
        Map<String, Model> models = manager.getModels();
        long deadline = System.currentTimeMillis() + REGISTRATION_WAIT_MS;
        Model model;
        while (true) {
            model = models.get(name);
            if (model == null) {
                logger.warn("Model not found: {}", name);
                return HttpResponseStatus.NOT_FOUND;
            }
            boolean settled = !Registrations.running(name) || System.currentTimeMillis() > deadline;
            if (settled && models.remove(name, model)) {
                break;
            }
            try {
                Thread.sleep(POLL_MS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return HttpResponseStatus.INTERNAL_SERVER_ERROR;
            }
        }
        model.setMinWorkers(0);
        model.setMaxWorkers(0);
        HttpResponseStatus status;
        try {
            status = wlm(manager).modelChanged(model).get();
        } catch (InterruptedException | ExecutionException | ReflectiveOperationException e) {
            logger.warn("unload of {} was interrupted: {}", name, e.toString());
            status = HttpResponseStatus.INTERNAL_SERVER_ERROR;
        }
        if (status == HttpResponseStatus.OK) {
            model.getModelArchive().clean();
            manager.getStartupModels().remove(name);
            logger.info("Model {} unregistered.", name);
        } else {
            models.putIfAbsent(name, model); // as MMS: still registered when its clean-up failed
        }
        return status;
    }

    private static WorkLoadManager wlm(ModelManager manager) throws ReflectiveOperationException {
        Field f = ModelManager.class.getDeclaredField("wlm");
        f.setAccessible(true);
        return (WorkLoadManager) f.get(manager);
    }

    private static void error(ChannelHandlerContext ctx, HttpResponseStatus status, String type, String message) {
        NettyUtils.sendJsonResponse(ctx, new ErrorResponse(status.code(), type, message), status);
    }
}
