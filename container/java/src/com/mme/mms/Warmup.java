package com.mme.mms;

import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.wlm.ModelManager;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Loads and unloads a tiny built-in model a few times at start-up, before GET /ping answers 200
 * (RequestGuard), so that SageMaker's first loads find the load path compiled: on a fresh JVM it runs
 * interpreted, and a container's first 50 loads took 10.7-13.6 ms at p50 against ~8 ms later (bench/README.md,
 * "Load breakdown mode"). The loads go through ModelManager as a POST /models does, but below the HTTP layer:
 * the metrics, the EMF lines and GET /models never see them, and the spare launchers do not count them.
 */
final class Warmup {

    private static final Logger logger = LoggerFactory.getLogger(Warmup.class);
    static final int LOADS = ContainerMetrics.intEnv("_MME_WARMUP_LOADS", 0);
    private static final String MODEL_DIR = System.getenv("_MME_WARMUP_MODEL");
    /** Not a name SageMaker sends (its names are hashes), and gone before the first /ping answers 200. */
    static final String NAME = "mme-start-up-warm-up";
    private static volatile boolean done = LOADS == 0 || MODEL_DIR == null || MODEL_DIR.isEmpty();
    private static volatile int loaded;
    /** A start-up it may delay at most by about twice this (a last load that hangs), never by LOADS minutes. */
    private static final long BUDGET_NANOS = TimeUnit.SECONDS.toNanos(10);

    private Warmup() {}

    /** Whether the warm-up is over (or there is none): until then GET /ping answers 503. */
    static boolean done() {
        return done;
    }

    /** Loads done by the warm-up, for GET /mme. */
    static int loaded() {
        return loaded;
    }

    static boolean isWarmup(String modelName) {
        return !done && NAME.equals(modelName);
    }

    /** On the plugin's thread, once our WorkLoadManager is in place. Never fails the start: a warm-up that
     * goes wrong is logged and ends, and the container serves as it would without it. */
    static void run(ModelManager manager) {
        if (done) {
            return;
        }
        long start = System.nanoTime();
        String stopped = null;
        try {
            ConfigManager config = ConfigManager.getInstance();
            int workers = config.getDefaultWorkers();
            long deadline = start + BUDGET_NANOS;
            for (int i = 0; i < LOADS && stopped == null; i++) {
                if (System.nanoTime() > deadline) {
                    stopped = "out of its " + TimeUnit.NANOSECONDS.toSeconds(BUDGET_NANOS) + " s";
                    break;
                }
                manager.registerModel(MODEL_DIR, NAME, null, null, 1, 100,
                        config.getDefaultResponseTimeoutSeconds(), null, config.getPreloadModel());
                HttpResponseStatus status = HttpResponseStatus.INTERNAL_SERVER_ERROR;
                try {
                    status = manager.updateModel(NAME, workers, workers).get(BUDGET_NANOS, TimeUnit.NANOSECONDS);
                } finally {
                    manager.unregisterModel(NAME); // NOT_FOUND when a failed load was unregistered already
                }
                if (HttpResponseStatus.OK.equals(status)) {
                    loaded++;
                } else {
                    stopped = "a load answered " + status;
                }
            }
        } catch (Exception e) { // whatever MMS throws: the container starts without a warm load path
            stopped = e.toString();
        } finally {
            done = true;
            HeapTrim.note(); // its garbage goes back once things are quiet, as a burst of real loads' does
        }
        long ms = TimeUnit.NANOSECONDS.toMillis(System.nanoTime() - start);
        if (stopped == null) {
            logger.info("load path warmed up with {} loads of a built-in model in {} ms", loaded, ms);
        } else {
            logger.warn("start-up warm-up stopped after {} loads in {} ms: {}", loaded, ms, stopped);
        }
    }
}
