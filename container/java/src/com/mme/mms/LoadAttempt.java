package com.mme.mms;

import com.amazonaws.ml.mms.http.ErrorResponse;
import com.amazonaws.ml.mms.util.NettyUtils;
import com.amazonaws.ml.mms.util.messages.BaseModelRequest;
import com.amazonaws.ml.mms.util.messages.ModelInferenceRequest;
import com.amazonaws.ml.mms.util.messages.ModelLoadModelRequest;
import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.wlm.BatchAggregator;
import com.amazonaws.ml.mms.wlm.Model;
import com.amazonaws.ml.mms.wlm.WorkerState;
import com.amazonaws.ml.mms.wlm.WorkerStateListener;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import io.netty.channel.ChannelHandlerContext;
import io.netty.handler.codec.http.HttpResponseStatus;
import java.lang.reflect.Field;
import java.util.List;
import java.util.concurrent.CompletableFuture;
import java.util.concurrent.CopyOnWriteArrayList;
import java.util.concurrent.ExecutorService;
import java.util.concurrent.LinkedBlockingQueue;
import java.util.concurrent.ThreadPoolExecutor;
import java.util.concurrent.TimeUnit;
import java.util.concurrent.atomic.AtomicBoolean;
import java.util.concurrent.atomic.AtomicInteger;
import java.util.concurrent.atomic.AtomicLong;
import java.util.function.Function;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * One load of a model (the worker threads MMS starts for a fresh registration), watched from the
 * workers' own callbacks. MMS 1.1.11 answers a failed load first ("Failed to start workers") and
 * unregisters the model afterwards, so a retry sent at once met 409 and an invoke 503. Here a failure
 * is settled in this order: the workers and the backend are stopped, the model is unregistered and
 * requests queued for it are answered 404, and only then is the POST answered, with the backend's own
 * reason and status (400 bad artifact, 404 missing path, 500 user code, 507 no room).
 */
final class LoadAttempt {

    private static final Logger logger = LoggerFactory.getLogger(LoadAttempt.class);
    static final AtomicLong FAILED = new AtomicLong();
    private static final long DISCARD_WAIT_MS = 60_000;
    private static final long RETIRE_POLL_MS = 2;
    private static final Field AGGREGATOR = field(WorkerThread.class, "aggregator");
    /** Settles failures off the worker thread, which the clean-up stops (MMS's own interrupts itself). */
    private static final ExecutorService SETTLER =
            new ThreadPoolExecutor(
                    0,
                    Integer.MAX_VALUE,
                    2,
                    TimeUnit.SECONDS,
                    new LinkedBlockingQueue<>(),
                    r -> {
                        Thread t = new Thread(r, "mme-load-failure");
                        t.setDaemon(true);
                        return t;
                    });

    private final GuardedWorkLoadManager manager;
    private final Model model;
    private final Answer answer = new Answer();
    private final AtomicInteger loading;
    private final AtomicBoolean settled = new AtomicBoolean();
    private volatile String reason;
    private volatile boolean failed;
    /**
     * This load's worker threads: the list MMS keeps in its workers map for the model. Copy-on-write:
     * the worker-count policy reads it on the event loop (WorkerScaler) while a scale changes it.
     */
    final List<WorkerThread> threads = new CopyOnWriteArrayList<>();
    final WorkerStateListener listener;

    LoadAttempt(GuardedWorkLoadManager manager, Model model, int workers) {
        this.manager = manager;
        this.model = model;
        this.loading = new AtomicInteger(workers);
        this.listener = new Listener();
    }

    /** A worker's reply handler that keeps the load reply's message (the backend's reason). */
    BatchAggregator replies() {
        return new Replies(model);
    }

    /** What MMS's register handler waits on. */
    CompletableFuture<HttpResponseStatus> answer() {
        return answer;
    }

    private void failed(HttpResponseStatus status) {
        if (!settled.compareAndSet(false, true)) {
            return;
        }
        failed = true;
        SETTLER.execute(
                () -> {
                    String why = reason != null ? reason : defaultReason(status);
                    try {
                        manager.discard(model, threads);
                    } catch (RuntimeException e) {
                        logger.warn("clean-up of model {}'s failed load: {}", model.getModelName(), e.toString());
                    }
                    FAILED.incrementAndGet();
                    // The one log line per failed load (stdout, which CloudWatch shows).
                    logger.warn("model '{}' failed to load ({}): {}", model.getModelName(), status.code(), why);
                    answer.fail(status, why);
                });
    }

    private static String defaultReason(HttpResponseStatus status) {
        if (status.code() == HttpResponseStatus.INSUFFICIENT_STORAGE.code()) {
            return "The model's worker ran out of memory while loading";
        }
        return "The model's worker stopped while loading";
    }

    private final class Listener extends WorkerStateListener {
        Listener() {
            super(new CompletableFuture<>(), 1); // MMS's bookkeeping is replaced by ours below
        }

        @Override
        public void notifyChangeState(String name, WorkerState state, HttpResponseStatus status) {
            if (state == WorkerState.WORKER_STARTED) {
                LoadClock.mark(name, "j_connect");
            } else if (state == WorkerState.WORKER_MODEL_LOADED) {
                if (loading.decrementAndGet() == 0 && settled.compareAndSet(false, true)) {
                    LoadClock.mark(name, "j_loaded");
                    manager.loaded(model);
                    answer.complete(status); // MMS writes the answer in here (thenApply)
                    manager.readyForNextLoad();
                }
            } else if (state == WorkerState.WORKER_ERROR || state == WorkerState.WORKER_STOPPED) {
                failed(status); // after the load settled, a stop is MMS's to restart: ignored there
            } else if (state == WorkerState.WORKER_SCALED_DOWN && !settled.get()) {
                // Stopped from outside before it loaded (an unload that waited past its limit): a
                // worker stopped mid-connect never reports WORKER_STOPPED, so settle here.
                reason = "Model " + model.getModelName() + " was unloaded while it was loading";
                failed(HttpResponseStatus.CONFLICT);
            }
        }
    }

    /** Whether a worker's reply handler has a request out (see GuardedWorkLoadManager.anyBusy). */
    static boolean handling(Object aggregator) {
        return aggregator instanceof Replies && ((Replies) aggregator).handling;
    }

    /** Whether this worker has a request out (or is loading): not free to take the next one. */
    static boolean busy(WorkerThread worker) {
        return handling(aggregatorOf(worker));
    }

    /**
     * A worker the policy or a PUT scales down takes no more requests (one it picks up goes back to
     * the model's queue) and is stopped once the request it has is answered, so a scale-down never
     * fails a request the way MMS's own does ("Worker died."). Waits at most until deadlineMs.
     */
    static void retire(WorkerThread worker, long deadlineMs) throws InterruptedException {
        Object aggregator = aggregatorOf(worker);
        if (aggregator instanceof Replies) {
            Replies replies = (Replies) aggregator;
            replies.retiring = true; // before reading handling: getRequest sets them the other way round
            while (replies.handling && System.currentTimeMillis() < deadlineMs) {
                Thread.sleep(RETIRE_POLL_MS);
            }
        }
        worker.shutdown();
    }

    private static Object aggregatorOf(WorkerThread worker) {
        try {
            return AGGREGATOR.get(worker);
        } catch (IllegalAccessException e) {
            return null;
        }
    }

    private static Field field(Class<?> type, String name) {
        try {
            Field f = type.getDeclaredField(name);
            f.setAccessible(true);
            return f;
        } catch (NoSuchFieldException e) {
            throw new IllegalStateException("MMS's WorkerThread has no " + name, e);
        }
    }

    private final class Replies extends BatchAggregator {
        /** A request was handed to the worker and not answered yet (set before MMS's req field is). */
        private volatile boolean handling;
        /** Being scaled down (retire): requests go back to the queue. */
        private volatile boolean retiring;
        /** The request out is an invoke (not a load): its success may be answered early. */
        private volatile boolean invoke;
        /** The reply EarlyAnswers answered, for the worker thread to pass over. */
        private volatile ModelWorkerResponse early;
        /** With MME_STAGE_LOG (JavaStages): when MMS's worker thread took the request. */
        private volatile long dispatchNanos;
        /** The backend channel that has EarlyAnswers (MMS reconnects a worker after its backend died). */
        private String hooked;

        Replies(Model model) {
            super(model);
        }

        @Override
        public void sendResponse(ModelWorkerResponse message) {
            if (message == early) { // answered on the backend's event loop (EarlyAnswers)
                early = null;
                handling = false;
                return;
            }
            if (!settled.get() && message.getCode() != 200 && reason == null) {
                reason = message.getMessage(); // the load reply, read before MMS sets the worker's state
            }
            super.sendResponse(message);
            handling = false;
        }

        /**
         * On the backend channel's event loop, before MMS's worker thread gets the reply: a successful
         * invoke is answered now. The worker thread filled the jobs before it wrote the request, and
         * takes the reply only after this returns.
         */
        private synchronized void replied(ModelWorkerResponse message, long writtenNanos, long readNanos) {
            if (!invoke) {
                return;
            }
            invoke = false;
            if (JavaStages.ON) {
                JavaStages.line('W', dispatchNanos, writtenNanos, readNanos);
            }
            if (message.getCode() != 200) {
                return;
            }
            try {
                super.sendResponse(message);
                early = message;
                EarlyAnswers.ANSWERED.incrementAndGet();
            } catch (RuntimeException e) {
                logger.warn("model {}: early answer failed: {}", model.getModelName(), e.toString());
            }
        }

        @Override
        public synchronized void sendError(BaseModelRequest message, String error, HttpResponseStatus status) {
            super.sendError(message, error, status); // a worker stopped from another thread: one at a time
        }

        /**
         * After its load failed, MMS's worker thread would go on to take requests queued for the model
         * (they wait for the load) and fail them 500 on its dead backend: it waits instead, until the
         * clean-up stops it (an interrupt), and the queued requests get 404. Once the model is being
         * unloaded, a request it takes goes back to the queue (answered 404 there) instead of into a
         * worker that is about to be stopped ("Worker died." 500).
         */
        @Override
        public BaseModelRequest getRequest(String threadName, WorkerState state)
                throws InterruptedException {
            handling = false; // runWorker answered the previous request before asking again
            if (failed) {
                Thread.sleep(DISCARD_WAIT_MS);
                throw new InterruptedException("load failed");
            }
            BaseModelRequest request = super.getRequest(threadName, state);
            if (!EarlyAnswers.OFF && !threadName.equals(hooked)
                    && EarlyAnswers.install(threads, threadName, this::replied)) {
                hooked = threadName;
            }
            invoke = request instanceof ModelInferenceRequest; // before the write: the event loop sees it
            if (JavaStages.ON) {
                dispatchNanos = System.nanoTime();
            }
            handling = true; // before the check: an unload either sees this or is seen below
            if (!(request instanceof ModelLoadModelRequest)
                    && (retiring || GuardedWorkLoadManager.unloading(model))) {
                handling = false;
                super.sendError(null, "unloading", HttpResponseStatus.NOT_FOUND); // data jobs: back to the queue
                Thread.sleep(DISCARD_WAIT_MS); // until the unload or scale-down stops this worker
                throw new InterruptedException("model unloaded");
            }
            return request;
        }
    }

    /**
     * The future MMS's register handler continues from (thenApply with the request's channel). A
     * success goes MMS's way; a failure is answered here on that channel, and MMS's continuation, which
     * would answer "Failed to start workers" and then unregister the name (by then maybe a new load of
     * it), never runs.
     */
    private static final class Answer extends CompletableFuture<HttpResponseStatus> {
        private ChannelHandlerContext ctx;
        private boolean continued;

        @Override
        public <U> CompletableFuture<U> thenApply(Function<? super HttpResponseStatus, ? extends U> fn) {
            ChannelHandlerContext found = channelOf(fn);
            synchronized (this) {
                ctx = found;
                continued = true;
            }
            return super.thenApply(fn);
        }

        void fail(HttpResponseStatus status, String why) {
            ChannelHandlerContext target;
            synchronized (this) {
                target = continued ? ctx : null;
            }
            if (target != null) {
                NettyUtils.sendJsonResponse(
                        target, new ErrorResponse(status.code(), "ModelLoadException", why), status);
            } else {
                complete(status); // no request waits on a channel (a start-up load): MMS's own way
            }
        }

        /** The request's channel, captured by MMS's continuation (a lambda). */
        private static ChannelHandlerContext channelOf(Object fn) {
            for (Field f : fn.getClass().getDeclaredFields()) {
                if (ChannelHandlerContext.class.isAssignableFrom(f.getType())) {
                    try {
                        f.setAccessible(true);
                        return (ChannelHandlerContext) f.get(fn);
                    } catch (ReflectiveOperationException | RuntimeException e) {
                        logger.warn("cannot see the channel of a load request: {}", e.toString());
                    }
                }
            }
            return null;
        }
    }
}
