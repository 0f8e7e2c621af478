package com.mme.mms;

import com.amazonaws.ml.mms.archive.ModelNotFoundException;
import com.amazonaws.ml.mms.http.BadRequestException;
import com.amazonaws.ml.mms.http.ConflictStatusException;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.wlm.BatchAggregator;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.amazonaws.ml.mms.wlm.WorkLoadManager;
import com.amazonaws.ml.mms.wlm.WorkerStateListener;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import io.netty.channel.EventLoopGroup;
import io.netty.channel.embedded.EmbeddedChannel;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.File;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.Collections;
import java.util.List;
import java.util.Map;
import java.util.Set;
import java.util.WeakHashMap;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.TimeoutException;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.concurrent.atomic.AtomicReference;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * MMS's WorkLoadManager with two guards, put in place of ModelManager's own instance (sharing all of
 * its state, so nothing else in MMS notices).
 *
 * <p>Unload: MMS's DELETE stops a model's worker at once, so the request inside it gets 500 "Worker
 * died.". Here the unregistered model's worker first finishes that request (as long as MMS itself would
 * wait for it, the model's response timeout); requests still queued are answered 404 meanwhile.
 *
 * <p>Register: MMS starts a model with Runtime.exec, which throws for a NUL in an argument (the model
 * name or handler) or a working directory it cannot enter; MMS then holds the request for a minute,
 * answers 500 and leaves the model registered without workers. Here those loads get 400 at once, and a
 * model whose start failed any other way is not left registered.
 *
 * <p>Load: a fresh registration's workers are started here (as MMS's addThreads does) with a
 * LoadAttempt watching them, so a failed load is unregistered before it is answered, with the
 * backend's reason. From registration until the load settles, an invoke of the model waits in its
 * queue (MMS answered 503 "No worker is available" until the workers existed, ~20-30 ms) and gets 404
 * if the load fails.
 *
 * <p>Same name, new model: MMS keeps workers by model name, so while a DELETE drained the old model of
 * a name (its name already free), a new registration of the name found the old workers under it and
 * started none (its invokes then waited forever), and the old model's clean-up stopped the new one's
 * workers (its load failed 500). Here each model owns its worker list: a load starts its own, and an
 * unload stops only its own. A registration that a DELETE overtook answers 409 instead of coming back.
 */
public final class GuardedWorkLoadManager extends WorkLoadManager {

    private static final Logger logger = LoggerFactory.getLogger(GuardedWorkLoadManager.class);
    private static final long IDLE_POLL_MS = 5;
    /** How long an unload waits for the launcher to exit after SIGTERM (see stopBackend). */
    private static final long GENTLE_STOP_MS = 5_000;
    /** Idle pool threads kept for the next load: its backend's and its first worker's. */
    private static final int IDLE_THREADS = 2;
    static final AtomicLong UNLOADS_WAITED = new AtomicLong();
    static final AtomicLong LOADS_REFUSED = new AtomicLong();
    /** Models registered whose load has not settled yet (see hasNoWorker). */
    private static final Set<Model> LOADING = ConcurrentHashMap.newKeySet();
    /** Each model's own worker list (MMS lists it under the name while the model is the registered one). */
    private static final Map<Model, List<WorkerThread>> OWN = new ConcurrentHashMap<>();
    /** Each model's load, whose reply handlers its later workers share (see scaleTo). */
    private static final Map<Model, LoadAttempt> ATTEMPTS = new ConcurrentHashMap<>();
    /** Models whose unregister began; weak, as a registration may still hold one briefly. */
    private static final Set<Model> GONE =
            Collections.synchronizedSet(Collections.newSetFromMap(new WeakHashMap<>()));

    private static volatile GuardedWorkLoadManager installed;
    /** WorkerThread's channel to its backend, looked up once (restartsOnDeath, on every load). */
    private static final Field BACKEND_CHANNEL = backendChannelField();

    private final ConfigManager config;
    private final EventLoopGroup backendGroup;
    // MMS's own objects, shared with the original WorkLoadManager (see install).
    private ConcurrentHashMap<String, List<WorkerThread>> workers;
    private ExecutorService threadPool;
    private AtomicInteger threadNumber;
    private AtomicInteger gpuCounter;
    private AtomicInteger port;

    private GuardedWorkLoadManager(ConfigManager configManager, EventLoopGroup backendGroup) {
        super(configManager, backendGroup);
        this.config = configManager;
        this.backendGroup = backendGroup;
    }

    /** Replaces the ModelManager's WorkLoadManager by a guarded one over the same workers and pools. */
    static void install(ModelManager manager) throws ReflectiveOperationException {
        Field wlmField = ModelManager.class.getDeclaredField("wlm");
        wlmField.setAccessible(true);
        WorkLoadManager original = (WorkLoadManager) wlmField.get(manager);
        if (original instanceof GuardedWorkLoadManager) {
            return;
        }
        GuardedWorkLoadManager guarded =
                new GuardedWorkLoadManager(
                        (ConfigManager) read(original, "configManager"),
                        (EventLoopGroup) read(original, "backendGroup"));
        // Share every field (workers map, thread pool, port and thread counters) with the original.
        for (Field f : WorkLoadManager.class.getDeclaredFields()) {
            if (!Modifier.isStatic(f.getModifiers())) {
                f.setAccessible(true);
                f.set(guarded, f.get(original));
            }
        }
        guarded.shareState(original);
        wlmField.set(manager, guarded);
        installed = guarded;
        guarded.readyForNextLoad();
        logger.info(
                "unloads finish the request in the worker; unstartable models get 400; failed loads"
                        + " are unregistered before they are answered");
    }

    @SuppressWarnings("unchecked")
    private void shareState(WorkLoadManager original) throws ReflectiveOperationException {
        workers = (ConcurrentHashMap<String, List<WorkerThread>>) read(original, "workers");
        threadPool = (ExecutorService) read(original, "threadPool");
        threadNumber = (AtomicInteger) read(original, "threadNumber");
        gpuCounter = (AtomicInteger) read(original, "gpuCounter");
        port = (AtomicInteger) read(original, "port");
    }

    @Override
    public CompletableFuture<HttpResponseStatus> modelChanged(Model model) {
        if (model.getMinWorkers() > 0 && isRegistered(model)) {
            synchronized (model.getModelName()) { // as MMS's modelChanged
                List<WorkerThread> mine = OWN.get(model);
                if (mine == null || mine.isEmpty()) {
                    return startLoad(model); // not the workers of an earlier model of the name
                }
            }
        }
        if (model.getMaxWorkers() > 0 && isRegistered(model) && ATTEMPTS.containsKey(model)) {
            // PUT /models/{name}?min_worker=&max_worker= (ModelManager.updateModel): the bounds the
            // worker-count policy keeps to; the count moves into them at once, by the policy's own path.
            int floor = WorkerScaler.floor(model);
            int now = threadsOf(model).size();
            int target = Math.max(floor, Math.min(now, Math.max(floor, model.getMaxWorkers())));
            WorkerScaler.boundsChanged(model);
            return scaleTo(model, target);
        }
        if (model.getMaxWorkers() != 0 || isRegistered(model)) {
            return super.modelChanged(model); // a scale of the registered model, not an unregister
        }
        GONE.add(model);
        WorkerScaler.forget(model);
        awaitLoad(model);
        LOADING.remove(model);
        boolean idle = finishInFlight(model);
        CompletableFuture<HttpResponseStatus> stopped = new CompletableFuture<>();
        stopped.complete(stop(model, idle));
        LifecyclePlugin.unloaded(model);
        return stopped;
    }

    /** MMS's unregister clean-up, for this model's own workers and backend only. */
    private HttpResponseStatus stop(Model model, boolean gently) {
        String name = model.getModelName();
        synchronized (name) { // waits for a backend still starting (addServerThread holds it)
            List<WorkerThread> mine = threadsOf(model);
            OWN.remove(model);
            ATTEMPTS.remove(model);
            unlist(name, mine); // only while the name still lists this model's workers
            for (int i = mine.size() - 1; i >= 0; i--) {
                mine.get(i).shutdown();
            }
            return stopBackend(model, gently);
        }
    }

    /**
     * Drops the name's worker list if it is this one: remove(key, value) compares lists by their
     * elements, and two models' empty lists are equal, so a new registration's list could go.
     */
    private void unlist(String name, List<WorkerThread> threads) {
        workers.computeIfPresent(name, (key, listed) -> listed == threads ? null : listed);
    }

    /** The model's worker threads: its own list, or (a model MMS loaded itself) the name's if they are its. */
    private List<WorkerThread> threadsOf(Model model) {
        List<WorkerThread> mine = OWN.get(model);
        if (mine != null) {
            return mine;
        }
        List<WorkerThread> listed = workers.get(model.getModelName());
        try {
            if (listed != null && !listed.isEmpty() && read(listed.get(0), "model") == model) {
                return listed;
            }
        } catch (ReflectiveOperationException e) {
            logger.warn("cannot see whose workers are listed for {}: {}", model.getModelName(), e.toString());
        }
        return List.of();
    }

    /**
     * MMS's shutdownServerThread: the model's launcher process, given the unregister timeout.
     *
     * <p>Gently (an unload with no request left in the model's workers): SIGTERM, which the launcher hands
     * to the zygote; it exits once the model's shared host has dropped it from its memory-ledger record
     * and the model's own workers have exited. The DELETE is then answered with the container's memory
     * accounting already without the model, which SageMaker's immediate retry of a load that got 507
     * relies on. MMS's SIGKILL follows only if that takes longer than GENTLE_STOP_MS.
     */
    private HttpResponseStatus stopBackend(Model model, boolean gently) {
        WorkerThread server = model.getServerThread();
        if (server == null) {
            return HttpResponseStatus.OK; // not started: addServerThread sees GONE and stops it
        }
        Process process = server.getLifeCycle().getProcess();
        // The thread waiting on the launcher: MMS's shutdown interrupts it, and it then SIGKILLs the launcher.
        Thread watcher = gently && process != null && process.isAlive() ? detachWatcher(server) : null;
        server.shutdown();
        if (watcher != null) {
            process.destroy();
            try {
                process.waitFor(GENTLE_STOP_MS, TimeUnit.MILLISECONDS);
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
            }
            if (process.isAlive()) {
                logger.warn("model {}: launcher still up {} ms after SIGTERM; killing it",
                        model.getModelName(), GENTLE_STOP_MS);
                watcher.interrupt();
            }
        }
        if (process != null && process.isAlive()) {
            process.destroyForcibly();
            try {
                if (!process.waitFor(Math.max(1, config.getUnregisterModelTimeout()), TimeUnit.SECONDS)) {
                    return HttpResponseStatus.REQUEST_TIMEOUT;
                }
            } catch (InterruptedException e) {
                Thread.currentThread().interrupt();
                return HttpResponseStatus.INTERNAL_SERVER_ERROR;
            }
        }
        return HttpResponseStatus.OK;
    }

    /** MMS's addThreads for a fresh load, with a LoadAttempt's listener and reply handler. */
    private CompletableFuture<HttpResponseStatus> startLoad(Model model) {
        LoadClock.mark(model.getModelName(), "j_workers");
        int count = model.getMinWorkers();
        LoadAttempt attempt = new LoadAttempt(this, model, count);
        workers.put(model.getModelName(), attempt.threads);
        OWN.put(model, attempt.threads);
        ATTEMPTS.put(model, attempt);
        addWorkers(model, attempt, count, attempt.listener);
        return attempt.answer();
    }

    /** MMS's addThreads: count more workers on the model's backend, reporting to listener. */
    private void addWorkers(Model model, LoadAttempt attempt, int count, WorkerStateListener listener) {
        int gpus = config.getNumberOfGpu();
        for (int i = 0; i < count; i++) {
            int gpuId = gpus > 0 ? gpuCounter.accumulateAndGet(gpus, (prev, max) -> ++prev % max) : -1;
            WorkerThread thread =
                    new WorkerThread(
                            config,
                            backendGroup,
                            model.getPort(),
                            gpuId,
                            model,
                            attempt.replies(),
                            listener,
                            threadNumber.getAndIncrement(),
                            false);
            attempt.threads.add(thread);
            threadPool.submit(thread);
        }
    }

    /**
     * Brings a loaded model to target workers: the one path of an operator's PUT and of the
     * worker-count policy (WorkerScaler). More workers connect to the model's backend as MMS's own
     * scale-up does (the zygote forks them from the loaded copy); fewer are taken from the end of the
     * list and stopped once idle (LoadAttempt.retire). Completes when the new workers are loaded (the
     * status of the first that failed otherwise), or the removed ones are stopped.
     */
    CompletableFuture<HttpResponseStatus> scaleTo(Model model, int target) {
        CompletableFuture<HttpResponseStatus> done = new CompletableFuture<>();
        List<WorkerThread> out = new java.util.ArrayList<>();
        synchronized (model.getModelName()) {
            LoadAttempt attempt = ATTEMPTS.get(model);
            if (attempt == null || GONE.contains(model) || !isRegistered(model)) {
                done.complete(HttpResponseStatus.NOT_FOUND);
                return done;
            }
            List<WorkerThread> threads = attempt.threads;
            int now = threads.size();
            if (now < target) {
                addWorkers(model, attempt, target - now, new WorkerStateListener(done, target - now));
                return done;
            }
            for (int i = now - 1; i >= target; i--) {
                out.add(threads.remove(i));
            }
        }
        if (out.isEmpty()) {
            done.complete(HttpResponseStatus.OK);
            return done;
        }
        long deadline = System.currentTimeMillis() + 1000L * Math.max(1, model.getResponseTimeoutSeconds());
        threadPool.execute(
                () -> {
                    try {
                        for (WorkerThread worker : out) {
                            LoadAttempt.retire(worker, deadline);
                        }
                    } catch (InterruptedException e) {
                        Thread.currentThread().interrupt();
                    } finally {
                        done.complete(HttpResponseStatus.OK);
                    }
                });
        return done;
    }

    /** The one in place (install), or null before it. */
    static GuardedWorkLoadManager current() {
        return installed;
    }

    /**
     * Requests in the container's workers now (each busy worker has one), counted up to limit: read
     * only when a model's busy stretch is over (WorkerScaler), so not on every request.
     */
    static int requestsInFlight(int limit) {
        int n = 0;
        for (LoadAttempt attempt : ATTEMPTS.values()) {
            for (WorkerThread worker : attempt.threads) {
                if (LoadAttempt.busy(worker) && ++n >= limit) {
                    return n;
                }
            }
        }
        return n;
    }

    /** The model's workers now, for the worker-count policy; empty unless its load is ours. */
    static List<WorkerThread> workersOf(Model model) {
        LoadAttempt attempt = ATTEMPTS.get(model);
        return attempt == null ? List.of() : attempt.threads;
    }

    /** A load settled with every worker up: from here the policy may scale it. */
    void loaded(Model model) {
        LOADING.remove(model);
        Descriptors.closeBackendStdin(model);
        WorkerScaler.loaded(model);
    }

    /**
     * Unregisters a model whose load failed, before its POST is answered: its workers and backend
     * are stopped (as a scale-down, so MMS does not restart them), then the name is free again and
     * requests queued for it are answered 404.
     */
    void discard(Model model, List<WorkerThread> threads) {
        String name = model.getModelName();
        unlist(name, threads);
        OWN.remove(model, threads);
        ATTEMPTS.remove(model);
        WorkerScaler.forget(model);
        for (WorkerThread thread : threads) {
            thread.shutdown();
        }
        stopBackend(model, false);
        ModelManager.getInstance().getModels().remove(name, model);
        LOADING.remove(model);
        LifecyclePlugin.answerQueuedOrLog(model);
        LifecyclePlugin.unloaded(model);
        model.getModelArchive().clean();
        readyForNextLoad();
    }

    /**
     * What the next load takes ready-made, prepared once a load is answered so that it takes no CPU from
     * one: spare launchers, and idle threads in MMS's pool for its backend and worker threads (MMS's
     * pool keeps none: a load's threads live as long as its model, and each new one cost ~0.5-1 ms).
     */
    void readyForNextLoad() {
        SpareLaunchers.refill();
        if (SpareLaunchers.SIZE == 0 || !(threadPool instanceof ThreadPoolExecutor)) {
            return;
        }
        ThreadPoolExecutor pool = (ThreadPoolExecutor) threadPool;
        int wanted = IDLE_THREADS - (pool.getPoolSize() - pool.getActiveCount());
        if (wanted <= 0) {
            return;
        }
        // Tasks that wait for each other take a thread each: the pool starts them, then keeps them idle.
        CountDownLatch together = new CountDownLatch(wanted);
        for (int i = 0; i < wanted; i++) {
            pool.execute(
                    () -> {
                        together.countDown();
                        try {
                            together.await(1, TimeUnit.SECONDS);
                        } catch (InterruptedException e) {
                            Thread.currentThread().interrupt();
                        }
                    });
        }
    }

    /** While its load is running, an invoke of a registered model waits in its queue. */
    @Override
    public boolean hasNoWorker(String modelName) {
        // MMS asks this for every invoke, just before queueing it: the worker-count policy's cue.
        Map<String, Model> models = ModelManager.getInstance().getModels();
        if (!super.hasNoWorker(modelName)) {
            Model model = models.get(modelName);
            if (model != null) {
                WorkerScaler.arrived(this, model);
            }
            return false;
        }
        // Looked up only now: an unload stops a model's workers after unregistering it, so a model
        // found before the workers were read may have been unloaded since.
        Model model = models.get(modelName);
        if (model == null) {
            // Unregistered since addJob looked it up (an unload, or a refused load forgotten): answer
            // as addJob itself would have a moment earlier, 404, not MMS's 503 "no worker".
            throw NotFound.<RuntimeException>raise(
                    new ModelNotFoundException("Model not found: " + modelName));
        }
        // Between registration and addServerThread (a few instructions) the model has no backend yet.
        boolean registering = model.getServerThread() == null && model.getMaxWorkers() == 0;
        if (registering || LOADING.contains(model)) {
            return false;
        }
        // MMS answers this invoke 503 "No worker is available": a state none of our paths should leave a
        // registered model in. Say which, so the one log line explains the 503.
        List<WorkerThread> listed = workers.get(modelName);
        List<WorkerThread> mine = OWN.get(model);
        logger.warn(
                "model {}: registered without workers, invoke answered 503 (unloading {}, own workers {},"
                        + " listed {}, min/max {}/{}, backend {})",
                modelName,
                GONE.contains(model),
                mine == null ? "none" : mine.size(),
                listed == null ? "none" : (listed == mine ? "own " : "other ") + listed.size(),
                model.getMinWorkers(),
                model.getMaxWorkers(),
                model.getServerThread() == null ? "none" : model.getServerThread().getState());
        return true;
    }

    @Override
    public void addServerThread(Model model, CompletableFuture<HttpResponseStatus> future)
            throws InterruptedException, ExecutionException, TimeoutException {
        String refusal = unstartable(model);
        if (refusal != null) {
            forget(model);
            LOADS_REFUSED.incrementAndGet();
            logger.warn("model {} refused: {}", model.getModelName(), refusal);
            throw new BadRequestException(refusal);
        }
        String shortage = Descriptors.shortage();
        if (shortage != null) {
            forget(model); // unregistered before the answer: SageMaker's retry after unloading must not meet 409
            logger.warn("model {} refused: {}", model.getModelName(), shortage);
            throw new Descriptors.Exhausted(shortage);
        }
        LOADING.add(model);
        LoadClock.mark(model.getModelName(), "j_backend_start");
        try {
            startBackend(model, future);
        } catch (InterruptedException | ExecutionException | TimeoutException | RuntimeException e) {
            forget(model);
            throw e;
        }
        if (GONE.contains(model) || !isRegistered(model)) {
            // A DELETE of the name came while the backend started: MMS would put the model back
            // (registerModel's last put) with its backend stopped. It stays unloaded instead.
            synchronized (model.getModelName()) {
                stopBackend(model, false);
            }
            forget(model);
            throw new ConflictStatusException(
                    "Model " + model.getModelName() + " was unloaded while it was loading");
        }
        LoadClock.mark(model.getModelName(), "j_backend_up");
    }

    /**
     * MMS's addServerThread, with the backend started from a spare launcher in this thread when one is
     * ready (SpareLifeCycle.prestart): the backend's thread then only watches the launcher, as MMS's does
     * once its start is read, and the load goes on without waiting for that thread's word. Otherwise (no
     * spare, MME_SPARE_LAUNCHERS=0, or the spare's start failed) MMS's way, on a SpareLifeCycle all the
     * same: it restarts a launcher that died only for a model still registered.
     */
    private void startBackend(Model model, CompletableFuture<HttpResponseStatus> future)
            throws InterruptedException, ExecutionException, TimeoutException {
        WorkerStateListener listener = new WorkerStateListener(future, 1);
        BatchAggregator aggregator = new BatchAggregator(model);
        synchronized (model.getModelName()) {
            WorkerThread thread = serverThread(model, aggregator, listener);
            SpareLifeCycle.Start start = SpareLifeCycle.Start.NONE;
            try {
                start = SpareLifeCycle.install(thread, config, model).prestart(model.getPort());
            } catch (ReflectiveOperationException e) {
                logger.warn("model {}: started without a spare launcher: {}", model.getModelName(), e.toString());
            }
            if (start == SpareLifeCycle.Start.FAILED) {
                thread = serverThread(model, aggregator, listener); // MMS's own start, on a socket of its own
            }
            model.setServerThread(thread);
            threadPool.submit(thread);
            if (start != SpareLifeCycle.Start.STARTED) {
                future.get(1, TimeUnit.MINUTES);
            }
        }
    }

    /** MMS's backend (server) thread for the model, on a new port. */
    private WorkerThread serverThread(Model model, BatchAggregator aggregator, WorkerStateListener listener) {
        model.setPort(port.getAndIncrement());
        WorkerThread thread =
                new WorkerThread(
                        config,
                        backendGroup,
                        model.getPort(),
                        -1,
                        model,
                        aggregator,
                        listener,
                        threadNumber.getAndIncrement(),
                        true);
        restartsOnDeath(thread);
        return thread;
    }

    /**
     * MMS's backend thread, when its launcher dies (killed by an operator, say), is meant to start it again
     * after a back-off (WorkerThread.retry). It never did: its clean-up begins with backendChannel.disconnect(),
     * a channel only worker threads have, and the NullPointerException ended the thread before retry().
     * The model then never answered again, its invokes waiting in its queue. A channel of no consequence
     * lets the clean-up run to the retry, which starts a new launcher; the model's workers connect to it.
     */
    private static void restartsOnDeath(WorkerThread server) {
        try {
            if (BACKEND_CHANNEL.get(server) == null) {
                BACKEND_CHANNEL.set(server, new EmbeddedChannel());
            }
        } catch (ReflectiveOperationException e) {
            logger.warn("a dead backend ({}) will not be restarted: {}", server.getWorkerId(), e.toString());
        }
    }

    private static Field backendChannelField() {
        try {
            Field f = WorkerThread.class.getDeclaredField("backendChannel");
            f.setAccessible(true);
            return f;
        } catch (NoSuchFieldException e) {
            throw new ExceptionInInitializerError(e); // the plugin is built against this very MMS (build.sh)
        }
    }

    /** Takes the launcher's watching thread out of MMS's reach (WorkerThread.currentThread), or null. */
    @SuppressWarnings("unchecked")
    private static Thread detachWatcher(WorkerThread server) {
        try {
            return ((AtomicReference<Thread>) read(server, "currentThread")).getAndSet(null);
        } catch (ReflectiveOperationException e) {
            logger.warn("cannot reach the launcher's watching thread: {}", e.toString());
            return null;
        }
    }

    /** Why Runtime.exec would refuse to start this model, or null. */
    private static String unstartable(Model model) {
        String handler = model.getModelArchive().getManifest().getModel().getHandler();
        File dir = model.getModelDir();
        String name = model.getModelName();
        if (name.indexOf('\0') >= 0) {
            return "Model name must not contain a NUL character";
        }
        String why = ModelNames.unaddressable(name);
        if (why != null) {
            return why;
        }
        if (handler != null && handler.indexOf('\0') >= 0) {
            return "Handler must not contain a NUL character";
        }
        if (dir.getPath().indexOf('\0') >= 0) {
            return "Model path must not contain a NUL character";
        }
        if (!dir.isDirectory() || !dir.canRead() || !dir.canExecute()) {
            return "Model directory "
                    + dir
                    + " is not a directory the model server's user can read";
        }
        return null;
    }

    private static void forget(Model model) {
        // Unregister before leaving LOADING: the other order lets hasNoWorker see a registered,
        // settled model without workers and answer 503.
        if (ModelManager.getInstance().getModels().remove(model.getModelName(), model)) {
            logger.info("model {} was not started and is not registered", model.getModelName());
        }
        LOADING.remove(model);
        LifecyclePlugin.answerQueuedOrLog(model);
    }

    /** The model's unregister began: its workers take no more requests (LoadAttempt). */
    static boolean unloading(Model model) {
        return GONE.contains(model);
    }

    static boolean isRegistered(Model model) {
        return ModelManager.getInstance().getModels().get(model.getModelName()) == model;
    }

    /**
     * An unload that overtakes the model's load waits for the load to settle, as for a request inside
     * its worker: MMS's worker stopped while connecting never answered the load (an NPE in its clean-up).
     */
    private static void awaitLoad(Model model) {
        long deadline =
                System.currentTimeMillis() + 1000L * Math.max(1, model.getResponseTimeoutSeconds());
        try {
            while (LOADING.contains(model) && OWN.containsKey(model) && System.currentTimeMillis() < deadline) {
                Thread.sleep(IDLE_POLL_MS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        }
    }

    /**
     * Waits until none of the model's workers has a request in flight, answering queued ones; false when
     * one was still running at the model's response timeout.
     */
    private boolean finishInFlight(Model model) {
        long deadline =
                System.currentTimeMillis() + 1000L * Math.max(1, model.getResponseTimeoutSeconds());
        long start = System.currentTimeMillis();
        boolean waited = false;
        try {
            while (true) {
                LifecyclePlugin.answerQueuedOrLog(model);
                if (!anyBusy(model)) {
                    break;
                }
                if (System.currentTimeMillis() > deadline) {
                    logger.warn(
                            "model {}: request still running after its response timeout; stopping it",
                            model.getModelName());
                    return false;
                }
                waited = true;
                Thread.sleep(IDLE_POLL_MS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
            return false;
        } catch (ReflectiveOperationException e) {
            logger.warn("cannot see model {}'s workers: {}", model.getModelName(), e.toString());
            return false;
        }
        if (waited) {
            UNLOADS_WAITED.incrementAndGet();
            logger.info(
                    "model {}: waited {} ms for the request in its worker before unloading",
                    model.getModelName(),
                    System.currentTimeMillis() - start);
        }
        return true;
    }

    private boolean anyBusy(Model model) throws ReflectiveOperationException {
        for (WorkerThread worker : new java.util.ArrayList<>(threadsOf(model))) {
            // WorkerThread.req holds the request sent to the backend until its reply is answered; a
            // thread that died keeps its last one, but has no currentThread any more. MMS unregisters
            // a model whose load failed from that load's own worker thread: it is not waiting on itself.
            Object running = ((AtomicReference<?>) read(worker, "currentThread")).get();
            boolean out = read(worker, "req") != null || LoadAttempt.handling(read(worker, "aggregator"));
            if (running != null && running != Thread.currentThread() && out) {
                return true;
            }
        }
        return false;
    }

    private static Object read(Object target, String name) throws ReflectiveOperationException {
        Field f = target.getClass().getDeclaredField(name);
        f.setAccessible(true);
        return f.get(target);
    }

    /** hasNoWorker cannot declare MMS's checked ModelNotFoundException; its caller, addJob, does. */
    private static final class NotFound {
        @SuppressWarnings("unchecked")
        static <E extends Throwable> RuntimeException raise(Throwable e) throws E {
            throw (E) e;
        }
    }
}
