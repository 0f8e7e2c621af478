package com.mme.mms;

import com.amazonaws.ml.mms.archive.ModelNotFoundException;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.amazonaws.ml.mms.wlm.Job;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.IOException;
import java.lang.reflect.Field;
import java.nio.charset.StandardCharsets;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import java.util.Map;
import java.util.concurrent.BlockingDeque;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ConcurrentMap;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;
import software.amazon.ai.mms.servingsdk.Context;
import software.amazon.ai.mms.servingsdk.ModelServerEndpoint;
import software.amazon.ai.mms.servingsdk.annotations.Endpoint;
import software.amazon.ai.mms.servingsdk.annotations.helpers.EndpointTypes;
import software.amazon.ai.mms.servingsdk.http.Request;
import software.amazon.ai.mms.servingsdk.http.Response;

/**
 * Fixes two MMS 1.1.11 lifecycle gaps from inside the JVM, through MMS's own plugin mechanism (MMS
 * instantiates every ModelServerEndpoint on its class path at startup).
 *
 * <p>1. MMS drops a model's job queue on DELETE without answering it: requests queued for the model
 * hang until the client gives up. They are answered 404 when the model is unregistered (see
 * GuardedWorkLoadManager), and a watcher keeps answering whatever lands in the queue afterwards for a
 * few seconds.
 *
 * <p>2. MMS's worker threads come from a cached pool that keeps idle threads for 60 s, about six
 * per model, and so does Java's "process reaper" pool (one thread per launcher process MMS started),
 * so unloading hundreds of models gave memory back only a minute later. Both pools' keep-alive is
 * shortened (the reaper's needs --add-opens java.base/java.lang, which `serve` passes).
 *
 * <p>3. MMS's DELETE stops the worker with a request inside it (500 "Worker died."), a load MMS
 * cannot exec (a NUL in the name) hangs a minute, and a failed load is answered before it is
 * unregistered: see GuardedWorkLoadManager and LoadAttempt, installed from here. If it cannot be
 * installed, GET /mme says so and `serve` refuses to start.
 *
 * <p>GET /mme on the management port reports what the plugin did (and proves it is loaded). The
 * fields read by reflection are MMS 1.1.11's; pyproject.toml pins that version.
 */
@Endpoint(
        urlPattern = "mme",
        endpointType = EndpointTypes.MANAGEMENT,
        description = "mme lifecycle plugin status")
public class LifecyclePlugin extends ModelServerEndpoint {

    private static final Logger logger = LoggerFactory.getLogger(LifecyclePlugin.class);
    private static final AtomicBoolean STARTED = new AtomicBoolean();
    private static final AtomicLong ANSWERED = new AtomicLong();
    private static final long POLL_MS = 50;
    private static final long DRAIN_FOR_MS = 5000;
    private static volatile long keepAliveSeconds = -1;
    private static volatile long reaperKeepAliveSeconds = -1;
    private static volatile boolean guarded;
    private static volatile boolean installFailed;
    /** Models unregistered lately, and until when their queues are still answered (see unloaded). */
    private static final Map<Model, Long> UNLOADED = new ConcurrentHashMap<>();

    public LifecyclePlugin() {
        // MMS's PluginsManager instantiates plugins once per endpoint type: start one watcher only.
        if (STARTED.compareAndSet(false, true)) {
            Thread t = new Thread(LifecyclePlugin::watch, "mme-lifecycle");
            t.setDaemon(true);
            t.start();
        }
    }

    @Override
    public void doGet(Request req, Response rsp, Context ctx) throws IOException {
        rsp.setContentType("application/json");
        String body =
                "{\"unloaded_requests_answered\":"
                        + ANSWERED.get()
                        + ",\"worker_pool_keep_alive_s\":"
                        + keepAliveSeconds
                        + ",\"process_reaper_keep_alive_s\":"
                        + reaperKeepAliveSeconds
                        + ",\"guarded_workload_manager\":"
                        + guarded
                        + ",\"install_failed\":"
                        + installFailed
                        + ",\"unloads_waited_for_in_flight\":"
                        + GuardedWorkLoadManager.UNLOADS_WAITED.get()
                        + ",\"unstartable_loads_refused\":"
                        + GuardedWorkLoadManager.LOADS_REFUSED.get()
                        + ",\"loads_refused_for_descriptors\":"
                        + Descriptors.REFUSED.get()
                        + ",\"backend_stdins_closed\":"
                        + Descriptors.STDIN_CLOSED.get()
                        + ",\"failed_loads_unregistered_before_answer\":"
                        + LoadAttempt.FAILED.get()
                        + ",\"pipelined_requests_held\":"
                        + InOrderAnswers.HELD.get()
                        + ",\"invokes_answered_early\":"
                        + EarlyAnswers.ANSWERED.get()
                        + ",\"client_connections\":"
                        + ConnectionCap.open()
                        + ",\"client_connection_limit\":"
                        + ConnectionCap.limit()
                        + ",\"idle_connections_closed_for_room\":"
                        + ConnectionCap.CLOSED_IDLE.get()
                        + ",\"connections_refused\":"
                        + ConnectionCap.REFUSED.get()
                        + ",\"max_workers_per_model\":"
                        + WorkerScaler.MAX_WORKERS
                        + ",\"workers_added_for_load\":"
                        + WorkerScaler.SCALED_UP.get()
                        + ",\"scale_ups_without_a_spare_core\":"
                        + WorkerScaler.NO_SPARE_CORE.get()
                        + ",\"scaled_back_when_idle\":"
                        + WorkerScaler.SCALED_DOWN.get()
                        + ",\"spare_launchers\":"
                        + SpareLaunchers.SIZE
                        + ",\"spare_launchers_ready\":"
                        + SpareLaunchers.ready()
                        + ",\"loads_from_a_spare_launcher\":"
                        + SpareLaunchers.USED.get()
                        + ",\"loads_without_a_spare_launcher\":"
                        + SpareLaunchers.MISSED.get()
                        + ",\"spare_launchers_that_failed\":"
                        + SpareLaunchers.FAILED.get()
                        + ",\"warm_up_done\":"
                        + Warmup.done()
                        + ",\"warm_up_loads\":"
                        + Warmup.loaded()
                        + "}";
        rsp.getOutputStream().write(body.getBytes(StandardCharsets.UTF_8));
    }

    private static void watch() {
        try {
            ModelManager manager;
            while ((manager = ModelManager.getInstance()) == null) {
                Thread.sleep(5); // plugins load before MMS initialises its ModelManager
            }
            shortenKeepAlive(manager);
            RequestGuardInstaller.startInBackground();
            try {
                GuardedWorkLoadManager.install(manager);
                guarded = true;
            } catch (ReflectiveOperationException | RuntimeException e) {
                installFailed = true; // GET /mme says so: `serve` refuses to start
                logger.error("MMS's own WorkLoadManager stays in place", e);
            }
            Warmup.run(manager);
            while (true) {
                long now = System.currentTimeMillis();
                for (Iterator<Map.Entry<Model, Long>> it = UNLOADED.entrySet().iterator();
                        it.hasNext(); ) {
                    Map.Entry<Model, Long> e = it.next();
                    if (manager.getModels().get(e.getKey().getModelName()) != e.getKey()) {
                        answerQueued(e.getKey());
                    }
                    if (now > e.getValue()) {
                        it.remove();
                    }
                }
                Thread.sleep(POLL_MS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ReflectiveOperationException | RuntimeException e) {
            installFailed |= !guarded;
            logger.error("mme lifecycle plugin stopped", e);
        }
    }

    private static void shortenKeepAlive(ModelManager manager) throws ReflectiveOperationException {
        Object wlm = field(manager, "wlm");
        Object pool = field(wlm, "threadPool");
        if (pool instanceof ThreadPoolExecutor) {
            long seconds = Long.getLong("mme.workerPoolKeepAliveSeconds", 2);
            ((ThreadPoolExecutor) pool).setKeepAliveTime(seconds, TimeUnit.SECONDS);
            keepAliveSeconds = seconds;
            logger.info("worker thread pool keep-alive set to {} s", seconds);
            try {
                Field f = Class.forName("java.lang.ProcessHandleImpl")
                        .getDeclaredField("processReaperExecutor");
                f.setAccessible(true);
                Object reaper = f.get(null);
                if (reaper instanceof ThreadPoolExecutor) {
                    ((ThreadPoolExecutor) reaper).setKeepAliveTime(seconds, TimeUnit.SECONDS);
                    reaperKeepAliveSeconds = seconds;
                }
            } catch (ReflectiveOperationException | RuntimeException e) {
                logger.warn("process reaper threads keep Java's 60 s keep-alive: {}", e.toString());
            }
        }
    }

    /**
     * Called by GuardedWorkLoadManager once MMS has stopped an unregistered model's workers: MMS may
     * still put a request back in the model's queue (a worker's last batch, a request that found the
     * model just before it went), so the watcher keeps answering the queue for a few seconds.
     */
    static void unloaded(Model model) {
        UNLOADED.put(model, System.currentTimeMillis() + DRAIN_FOR_MS);
    }

    static void answerQueuedOrLog(Model model) {
        try {
            answerQueued(model);
        } catch (ReflectiveOperationException e) {
            logger.warn("cannot answer requests queued for {}: {}", model.getModelName(), e.toString());
        }
    }

    @SuppressWarnings("unchecked")
    private static void answerQueued(Model model) throws ReflectiveOperationException {
        Map<String, ? extends BlockingDeque<Job>> queues =
                (ConcurrentMap<String, ? extends BlockingDeque<Job>>) field(model, "jobsDb");
        List<Job> jobs = new ArrayList<>();
        for (BlockingDeque<Job> queue : queues.values()) {
            queue.drainTo(jobs);
        }
        String message =
                "Model \"" + model.getModelName() + "\" was unloaded before this request ran";
        for (Job job : jobs) {
            // Job.sendError would name the error InternalServerException; say what it is, as MMS's
            // own 404 for an unknown model does.
            ChannelHandlerContext ctx = (ChannelHandlerContext) field(job, "ctx");
            if (ctx != null) {
                NettyUtils.sendError(
                        ctx, HttpResponseStatus.NOT_FOUND, new ModelNotFoundException(message));
            }
            ANSWERED.incrementAndGet();
        }
        if (!jobs.isEmpty()) {
            logger.info(
                    "answered {} request(s) queued for unloaded model {} with 404",
                    jobs.size(),
                    model.getModelName());
        }
    }

    private static Object field(Object target, String name) throws ReflectiveOperationException {
        Field f = target.getClass().getDeclaredField(name);
        f.setAccessible(true);
        return f.get(target);
    }
}
