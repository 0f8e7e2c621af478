package com.mme.mms;

import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.util.List;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.ScheduledExecutorService;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * The worker-count policy: a model's workers follow its load between its minWorkers and maxWorkers
 * (what GET /models/{name} shows; PUT /models/{name}?min_worker=&max_worker= sets them).
 *
 * <p>Up: when every worker of a model has been busy for MME_SCALE_UP_WAIT_MS (each invoke that
 * arrives in that time finds no free worker, so it waits in the model's queue), one worker is added,
 * up to maxWorkers, as long as fewer requests than cores are in flight in the whole container (a spare
 * core for it to use); the next one only after another such stretch. Down: once no invoke of the model
 * has arrived for MME_SCALE_DOWN_IDLE_SECONDS, it goes back to minWorkers. Both go through
 * GuardedWorkLoadManager.scaleTo, the path of an operator's PUT. A freshly loaded model's maxWorkers
 * is MME_MAX_WORKERS_PER_MODEL (when above its minWorkers); a PUT's bounds replace both.
 *
 * <p>Event-driven: MMS asks hasNoWorker for every invoke just before queueing it, and that call
 * (on the event loop, no I/O, no locks) is where busy time is seen. A timer only checks a model
 * whose workers went busy (did it stay so?) and one that is above its minimum (has it gone idle?).
 */
final class WorkerScaler {

    private static final Logger logger = LoggerFactory.getLogger(WorkerScaler.class);
    /** Workers a model may grow to by itself; 0 or 1: off (a model keeps the workers it loaded with). */
    static final int MAX_WORKERS =
            ContainerMetrics.intEnv("_MME_SCALE_MAX_WORKERS", Runtime.getRuntime().availableProcessors());
    static final long UP_WAIT_NS =
            TimeUnit.MILLISECONDS.toNanos(ContainerMetrics.longEnv("_MME_SCALE_UP_WAIT_MS", 50));
    static final long IDLE_NS =
            TimeUnit.SECONDS.toNanos(ContainerMetrics.longEnv("_MME_SCALE_DOWN_IDLE_S", 60));
    /** A worker is only added while fewer requests than this are in flight in the whole container. */
    static final int CORES = Runtime.getRuntime().availableProcessors();
    static final AtomicLong SCALED_UP = new AtomicLong();
    /** Busy stretches that found every core with a request already (no worker added). */
    static final AtomicLong NO_SPARE_CORE = new AtomicLong();
    static final AtomicLong SCALED_DOWN = new AtomicLong();

    private static final Map<Model, State> STATES = new ConcurrentHashMap<>();
    private static final ScheduledExecutorService TIMER = timer();

    private WorkerScaler() {}

    /** A model's state under the policy; its fields are written on the event loop and the timer. */
    private static final class State {
        /** When every worker was first seen busy in the current stretch (0: a worker is free). */
        volatile long busySince;
        volatile long lastArrival = System.nanoTime();
        /** No scale-up before this (after one failed). */
        volatile long holdUntil;
        final AtomicBoolean scaling = new AtomicBoolean();
        final AtomicBoolean upCheck = new AtomicBoolean();
        final AtomicBoolean downCheck = new AtomicBoolean();
    }

    /** The fewest workers a loaded model keeps: its minWorkers (MMS's 0 would leave it unanswerable). */
    static int floor(Model model) {
        return Math.max(1, model.getMinWorkers());
    }

    /** A fresh load settled: its maxWorkers becomes the policy's bound, unless a PUT set one. */
    static void loaded(Model model) {
        if (MAX_WORKERS > model.getMaxWorkers()) {
            model.setMaxWorkers(MAX_WORKERS);
        }
        STATES.put(model, new State());
    }

    /** A PUT set the model's bounds: the current stretch of busy time starts over. */
    static void boundsChanged(Model model) {
        State s = STATES.get(model);
        if (s != null) {
            s.busySince = 0;
            s.lastArrival = System.nanoTime();
            armDown(model, s);
        }
    }

    static void forget(Model model) {
        STATES.remove(model);
    }

    /** An invoke of a loaded model is about to be queued (GuardedWorkLoadManager.hasNoWorker). */
    static void arrived(GuardedWorkLoadManager wlm, Model model) {
        State s = STATES.get(model);
        if (s == null) {
            return; // loading, or not ours
        }
        long now = System.nanoTime();
        s.lastArrival = now;
        List<WorkerThread> workers = GuardedWorkLoadManager.workersOf(model);
        int count = workers.size();
        if (count > floor(model)) {
            armDown(model, s);
        }
        if (count >= model.getMaxWorkers() || !allBusy(workers)) {
            s.busySince = 0;
            return;
        }
        long since = s.busySince;
        if (since == 0) {
            s.busySince = now;
            since = now;
            if (UP_WAIT_NS > 0 && s.upCheck.compareAndSet(false, true)) {
                // No invoke may come after this one: the timer looks again when the wait is over.
                TIMER.schedule(() -> upCheck(wlm, model, s, now), UP_WAIT_NS, TimeUnit.NANOSECONDS);
            }
        }
        if (now - since >= UP_WAIT_NS) {
            scaleUp(wlm, model, s, now);
        }
    }

    private static boolean allBusy(List<WorkerThread> workers) {
        if (workers.isEmpty()) {
            return false;
        }
        for (WorkerThread worker : workers) {
            if (!LoadAttempt.busy(worker)) {
                return false;
            }
        }
        return true;
    }

    private static void upCheck(GuardedWorkLoadManager wlm, Model model, State s, long since) {
        s.upCheck.set(false);
        List<WorkerThread> workers = GuardedWorkLoadManager.workersOf(model);
        if (s.busySince == since && since != 0 && workers.size() < model.getMaxWorkers() && allBusy(workers)) {
            scaleUp(wlm, model, s, System.nanoTime());
        }
    }

    private static void scaleUp(GuardedWorkLoadManager wlm, Model model, State s, long now) {
        if (now < s.holdUntil || STATES.get(model) != s) {
            return;
        }
        s.busySince = 0; // the next worker needs a busy stretch of its own
        if (GuardedWorkLoadManager.requestsInFlight(CORES) >= CORES) {
            // Every core has a request already (many models busy at once, or queued in a shared
            // host): another worker would add a process, not throughput. Measured: bench.worker_policy.
            NO_SPARE_CORE.incrementAndGet();
            return;
        }
        if (!s.scaling.compareAndSet(false, true)) {
            return;
        }
        TIMER.execute(
                () -> {
                    int before = GuardedWorkLoadManager.workersOf(model).size();
                    if (before >= model.getMaxWorkers()) {
                        s.scaling.set(false);
                        return;
                    }
                    logger.info("model {}: every worker busy; {} -> {} workers", model.getModelName(), before, before + 1);
                    wlm.scaleTo(model, before + 1)
                            .whenComplete((status, error) -> scaledUp(wlm, model, s, before, status));
                });
    }

    private static void scaledUp(
            GuardedWorkLoadManager wlm, Model model, State s, int before, HttpResponseStatus status) {
        if (status != null && status.code() == HttpResponseStatus.OK.code()) {
            SCALED_UP.incrementAndGet();
            armDown(model, s);
            s.scaling.set(false);
            return;
        }
        // The new worker did not load (no memory, its process died): back to where it was, and no
        // further try for an idle window, so a model that cannot grow does not retry on every invoke.
        logger.warn("model {}: an added worker failed to load ({}); back to {}", model.getModelName(), status, before);
        s.holdUntil = System.nanoTime() + IDLE_NS;
        wlm.scaleTo(model, Math.max(before, floor(model))).whenComplete((st, e) -> s.scaling.set(false));
    }

    private static void armDown(Model model, State s) {
        if (s.downCheck.compareAndSet(false, true)) {
            TIMER.schedule(() -> downCheck(model, s), IDLE_NS, TimeUnit.NANOSECONDS);
        }
    }

    private static void downCheck(Model model, State s) {
        if (STATES.get(model) != s) {
            s.downCheck.set(false);
            return;
        }
        long quiet = System.nanoTime() - s.lastArrival;
        if (quiet < IDLE_NS || s.scaling.get()) {
            TIMER.schedule(() -> downCheck(model, s), Math.max(IDLE_NS - quiet, 1), TimeUnit.NANOSECONDS);
            return;
        }
        s.downCheck.set(false);
        int now = GuardedWorkLoadManager.workersOf(model).size();
        int floor = floor(model);
        if (now <= floor || !s.scaling.compareAndSet(false, true)) {
            return;
        }
        GuardedWorkLoadManager wlm = GuardedWorkLoadManager.current();
        if (wlm == null) {
            s.scaling.set(false);
            return;
        }
        logger.info("model {}: idle; {} -> {} workers", model.getModelName(), now, floor);
        SCALED_DOWN.incrementAndGet();
        wlm.scaleTo(model, floor).whenComplete((st, e) -> s.scaling.set(false));
    }

    private static ScheduledExecutorService timer() {
        ScheduledThreadPoolExecutor t =
                new ScheduledThreadPoolExecutor(
                        1,
                        r -> {
                            Thread thread = new Thread(r, "mme-worker-scaler");
                            thread.setDaemon(true);
                            return thread;
                        });
        t.setRemoveOnCancelPolicy(true);
        return t;
    }
}
