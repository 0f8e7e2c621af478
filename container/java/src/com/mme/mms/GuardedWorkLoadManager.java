package com.mme.mms;

import com.amazonaws.ml.mms.http.BadRequestException;
import com.amazonaws.ml.mms.util.ConfigManager;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.ModelManager;
import com.amazonaws.ml.mms.wlm.WorkLoadManager;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import io.netty.channel.EventLoopGroup;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.io.File;
import java.lang.reflect.Field;
import java.lang.reflect.Modifier;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.ExecutionException;
import java.util.concurrent.TimeoutException;
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
 */
public final class GuardedWorkLoadManager extends WorkLoadManager {

    private static final Logger logger = LoggerFactory.getLogger(GuardedWorkLoadManager.class);
    private static final long IDLE_POLL_MS = 5;
    static final AtomicLong UNLOADS_WAITED = new AtomicLong();
    static final AtomicLong LOADS_REFUSED = new AtomicLong();

    private GuardedWorkLoadManager(ConfigManager configManager, EventLoopGroup backendGroup) {
        super(configManager, backendGroup);
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
        wlmField.set(manager, guarded);
        logger.info("unloads finish the request in the worker; unstartable models get 400");
    }

    @Override
    public CompletableFuture<HttpResponseStatus> modelChanged(Model model) {
        if (model.getMaxWorkers() != 0 || isRegistered(model)) {
            return super.modelChanged(model); // a load or a scale, not an unregister
        }
        finishInFlight(model);
        CompletableFuture<HttpResponseStatus> stopped = super.modelChanged(model);
        LifecyclePlugin.unloaded(model);
        return stopped;
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
        try {
            super.addServerThread(model, future);
        } catch (InterruptedException | ExecutionException | TimeoutException | RuntimeException e) {
            forget(model);
            throw e;
        }
    }

    /** Why Runtime.exec would refuse to start this model, or null. */
    private static String unstartable(Model model) {
        String handler = model.getModelArchive().getManifest().getModel().getHandler();
        File dir = model.getModelDir();
        if (model.getModelName().indexOf('\0') >= 0) {
            return "Model name must not contain a NUL character";
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
        if (ModelManager.getInstance().getModels().remove(model.getModelName(), model)) {
            logger.info("model {} was not started and is not registered", model.getModelName());
        }
    }

    private static boolean isRegistered(Model model) {
        return ModelManager.getInstance().getModels().get(model.getModelName()) == model;
    }

    /** Waits until none of the model's workers has a request in flight, answering queued ones. */
    private void finishInFlight(Model model) {
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
                    break;
                }
                waited = true;
                Thread.sleep(IDLE_POLL_MS);
            }
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ReflectiveOperationException e) {
            logger.warn("cannot see model {}'s workers: {}", model.getModelName(), e.toString());
        }
        if (waited) {
            UNLOADS_WAITED.incrementAndGet();
            logger.info(
                    "model {}: waited {} ms for the request in its worker before unloading",
                    model.getModelName(),
                    System.currentTimeMillis() - start);
        }
    }

    private boolean anyBusy(Model model) throws ReflectiveOperationException {
        for (WorkerThread worker : getWorkers(model.getModelName())) {
            // WorkerThread.req holds the request sent to the backend until its reply is answered; a
            // thread that died keeps its last one, but has no currentThread any more. MMS unregisters
            // a model whose load failed from that load's own worker thread: it is not waiting on itself.
            Object running = ((AtomicReference<?>) read(worker, "currentThread")).get();
            if (running != null
                    && running != Thread.currentThread()
                    && read(worker, "req") != null) {
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
}
