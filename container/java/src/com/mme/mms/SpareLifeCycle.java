package com.mme.mms;

import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.util.Connector;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.WorkerInitializationException;
import com.amazonaws.ml.mms.wlm.WorkerLifeCycle;
import com.amazonaws.ml.mms.wlm.WorkerState;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import java.io.ByteArrayOutputStream;
import java.io.File;
import java.io.IOException;
import java.io.InputStream;
import java.nio.charset.StandardCharsets;
import java.lang.reflect.AccessibleObject;
import java.lang.reflect.Field;
import java.lang.reflect.Method;
import java.util.concurrent.ScheduledFuture;
import java.util.concurrent.ScheduledThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * MMS's WorkerLifeCycle for a model's backend, started from a spare launcher (SpareLaunchers) when one
 * is ready: the same command, environment and working directory MMS's startBackendServer would exec, and
 * the same wait for "MMS worker started." on its stdout, read by the load's thread (prestart), then by a
 * SpareOutput started with the spare. The rest (exit, the exit value, the backend thread's watch) is
 * MMS's, on the spare's Process.
 */
final class SpareLifeCycle extends WorkerLifeCycle {

    private static final Logger logger = LoggerFactory.getLogger(SpareLifeCycle.class);

    private static final Field LIFE_CYCLE;
    private static final Field STATE;
    private static final Field PROCESS;
    private static final Method SET_PORT;
    private static final Method ENV;

    static {
        try {
            LIFE_CYCLE = WorkerThread.class.getDeclaredField("lifeCycle");
            STATE = WorkerThread.class.getDeclaredField("state");
            PROCESS = WorkerLifeCycle.class.getDeclaredField("process");
            SET_PORT = WorkerLifeCycle.class.getDeclaredMethod("setPort", int.class);
            ENV = WorkerLifeCycle.class.getDeclaredMethod("getEnvString", String.class, String.class, String.class);
            for (AccessibleObject o : new AccessibleObject[] {LIFE_CYCLE, STATE, PROCESS, SET_PORT, ENV}) {
                o.setAccessible(true);
            }
        } catch (ReflectiveOperationException e) {
            throw new ExceptionInInitializerError(e);
        }
    }

    private static final ScheduledThreadPoolExecutor START_DEADLINES = startDeadlines();

    private final ConfigManager config;
    private final Model model;
    private WorkerThread server;
    private SpareLaunchers.Spare spare; // null: MMS's own start
    private boolean startedOnce; // by the backend thread: a second start is a restart, always MMS's own

    private SpareLifeCycle(ConfigManager config, Model model) {
        super(config, model);
        this.config = config;
        this.model = model;
    }

    /** Gives a backend (server) WorkerThread, not yet started, this life cycle; returns it. */
    static SpareLifeCycle install(WorkerThread server, ConfigManager config, Model model)
            throws ReflectiveOperationException {
        SpareLifeCycle lifeCycle = new SpareLifeCycle(config, model);
        lifeCycle.server = server;
        LIFE_CYCLE.set(server, lifeCycle);
        return lifeCycle;
    }

    /**
     * Starts the model's backend from a spare launcher, in the calling thread (the load's), up to the
     * launcher's "MMS worker started.". MMS's own start runs in the backend's thread while the load's
     * thread waits for that thread's word; here the load's thread reads the launcher's stdout itself, two
     * thread hand-offs fewer. NONE: no spare was ready, the backend's thread starts it as MMS does.
     * FAILED: the spare went (killed while it waited, say) before it started: the caller starts the
     * model afresh, on a new port, as MMS does, so the load does not fail for a spare's sake.
     */
    Start prestart(int port) {
        SpareLaunchers.Spare taken = SpareLaunchers.take(!Warmup.isWarmup(model.getModelName()));
        if (taken == null) {
            return Start.NONE;
        }
        synchronized (this) {
            spare = taken;
        }
        String why;
        try {
            handTo(taken, port);
            if (awaitStart(taken)) {
                taken.out.handOver();
                return Start.STARTED;
            }
            why = "it exited";
        } catch (WorkerInitializationException | ReflectiveOperationException e) {
            why = e.toString();
        }
        SpareLaunchers.FAILED.incrementAndGet();
        logger.warn("model {}: the spare launcher did not start ({}); starting one as MMS does",
                model.getModelName(), why);
        taken.discard();
        return Start.FAILED;
    }

    enum Start { STARTED, NONE, FAILED }

    private static ScheduledThreadPoolExecutor startDeadlines() {
        ScheduledThreadPoolExecutor pool = new ScheduledThreadPoolExecutor(1, r -> {
            Thread t = new Thread(r, "mme-spare-start-deadline");
            t.setDaemon(true);
            return t;
        });
        pool.setRemoveOnCancelPolicy(true);
        return pool;
    }

    /**
     * The backend thread's start: nothing left to do after prestart. Otherwise (no spare, or a restart of a
     * backend whose launcher died: a spare serves one start) MMS's own.
     */
    @Override
    public void startBackendServer(int port) throws WorkerInitializationException, InterruptedException {
        boolean prestarted;
        boolean restart;
        synchronized (this) {
            prestarted = spare != null && !startedOnce;
            restart = startedOnce;
            startedOnce = true;
            if (!prestarted) {
                spare = null;
            }
        }
        if (!prestarted) {
            boolean gone = GuardedWorkLoadManager.unloading(model) || !GuardedWorkLoadManager.isRegistered(model);
            if (restart && gone) {
                // A retry MMS scheduled when the launcher died, run after the model was unloaded or its load
                // failed: a launcher started now would be nobody's. Scaled down, MMS retries no more.
                try {
                    STATE.set(server, WorkerState.WORKER_SCALED_DOWN);
                } catch (IllegalAccessException e) {
                    logger.warn("model {}: cannot end its backend's retries: {}", model.getModelName(), e.toString());
                }
                throw new WorkerInitializationException("Model " + model.getModelName() + " is not registered");
            }
            super.startBackendServer(port); // not holding our monitor: MMS's readers take it (setPid)
        }
    }

    /** Reads the launcher's stdout up to "MMS worker started." (true) or its end (false). */
    private boolean awaitStart(SpareLaunchers.Spare taken) throws WorkerInitializationException {
        // MMS gives a backend 2 minutes to start; a launcher that neither starts nor exits is ended then.
        // Cancelled (and dropped from the queue) once answered: a pending task held the spare's Process and
        // reader threads for the whole 2 minutes, ~300 of them after 150 loads.
        AtomicBoolean done = new AtomicBoolean();
        ScheduledFuture<?> deadline = START_DEADLINES.schedule(
                () -> {
                    if (!done.get()) {
                        taken.process.destroyForcibly();
                    }
                }, 2, TimeUnit.MINUTES);
        InputStream in = taken.process.getInputStream();
        ByteArrayOutputStream line = new ByteArrayOutputStream(64);
        try {
            for (int b; (b = in.read()) >= 0; ) {
                if (b != '\n') {
                    line.write(b);
                    continue;
                }
                if (SpareOutput.handle(line.toString(StandardCharsets.UTF_8), false, this)) {
                    return true;
                }
                line.reset();
            }
            return false;
        } catch (IOException e) {
            throw new WorkerInitializationException("Failed to read the backend's start", e);
        } finally {
            done.set(true);
            deadline.cancel(false);
        }
    }

    /** What MMS's startBackendServer does up to its wait, with the spare in place of Runtime.exec. */
    private void handTo(SpareLaunchers.Spare taken, int port)
            throws WorkerInitializationException, ReflectiveOperationException {
        File workingDir = new File(config.getModelServerHome());
        File modelPath;
        try {
            modelPath = model.getModelDir().getCanonicalFile();
        } catch (IOException e) {
            throw new WorkerInitializationException("Failed get MMS home directory", e);
        }
        SET_PORT.invoke(this, port);
        Connector connector = new Connector(port);
        String handler = model.getModelArchive().getManifest().getModel().getHandler();
        String[] args = {
            config.getPythonExecutable(), // this launcher: MMS's 'python'
            new File(workingDir, "mms/model_service_worker.py").getAbsolutePath(),
            "--sock-type", connector.getSocketType(),
            connector.isUds() ? "--sock-name" : "--port", connector.getSocketPath(),
            "--handler", handler,
            "--model-path", model.getModelDir().getAbsolutePath(),
            "--model-name", model.getModelName(),
            "--preload-model", model.preloadModel(),
            "--tmp-dir", System.getProperty("java.io.tmpdir"),
        };
        String[] envp = (String[]) ENV.invoke(this, workingDir.getAbsolutePath(), modelPath.getAbsolutePath(), handler);
        String name = model.getModelName();
        String threadName = "W-" + port + '-' + name.substring(0, Math.min(name.length(), 25));
        synchronized (this) {
            PROCESS.set(this, taken.process);
            taken.out.adopt(this, threadName);
            taken.err.adopt(this, threadName);
            // Stamped before the write: once written, the launcher may register before this thread runs again.
            LoadClock.mark(name, "j_spare_handed");
            try {
                SpareLaunchers.hand(taken.process, args, envp, modelPath);
            } catch (IOException e) {
                throw new WorkerInitializationException("Failed start worker process", e);
            }
        }
    }

    @Override
    public synchronized void terminateIOStreams() {
        if (spare != null) {
            spare.out.terminate();
            spare.err.terminate();
        }
        super.terminateIOStreams();
    }
}
