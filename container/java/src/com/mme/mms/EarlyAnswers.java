package com.mme.mms;

import com.amazonaws.ml.mms.util.codec.ModelResponseDecoder;
import com.amazonaws.ml.mms.util.messages.ModelWorkerResponse;
import com.amazonaws.ml.mms.wlm.WorkerThread;
import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelPromise;
import io.netty.channel.ChannelPipeline;
import java.lang.reflect.Field;
import java.util.List;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Answers an invoke as soon as the worker's reply is decoded, on the backend channel's event loop.
 *
 * <p>MMS's WorkerHandler only puts the reply in a queue; MMS's worker thread then has to be woken to take
 * it and hand the HTTP answer to the client's event loop: one more thread hop on every request's way
 * back (measured in bench/README.md, "Latency mode"). Here a handler between MMS's reply decoder and its
 * WorkerHandler writes the answer first; the reply then goes on to the worker thread as before, which
 * finds its jobs answered (LoadAttempt.Replies) and takes the next request. Only successful replies to
 * invokes are answered here: load replies and failures keep MMS's own path.
 */
final class EarlyAnswers extends ChannelDuplexHandler {

    private static final Logger logger = LoggerFactory.getLogger(EarlyAnswers.class);
    static final String NAME = "mme-early-answers";
    /** A bench-only switch (bench/warm_ab.py): MMS's own path, to measure against. */
    static final boolean OFF = "off".equals(System.getenv("_MME_EARLY_ANSWERS"));

    /** What answers a reply: LoadAttempt's Replies. */
    interface Answer {
        /** On the backend's event loop; with JavaStages on, when the request went out and the reply came. */
        void replied(ModelWorkerResponse reply, long writtenNanos, long readNanos);
    }

    /** Invokes answered here (GET /mme). */
    static final AtomicLong ANSWERED = new AtomicLong();

    private final Answer answer;
    /** With MME_STAGE_LOG (JavaStages): when this loop wrote the request out. */
    long writtenNanos;

    private EarlyAnswers(Answer answer) {
        this.answer = answer;
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise) {
        if (JavaStages.ON) {
            writtenNanos = System.nanoTime();
        }
        ctx.write(msg, promise);
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (msg instanceof ModelWorkerResponse) {
            answer.replied((ModelWorkerResponse) msg, writtenNanos, JavaStages.ON ? System.nanoTime() : 0);
        }
        ctx.fireChannelRead(msg); // on to MMS's WorkerHandler and its worker thread
    }

    /**
     * The backend channel (its id is what MMS's worker thread passes to getRequest) of one of these
     * worker threads gets the handler, once; false if it has none yet or cannot take one.
     */
    static boolean install(List<WorkerThread> threads, String channelId, Answer answer) {
        try {
            for (WorkerThread thread : List.copyOf(threads)) {
                Channel channel = backendChannel(thread);
                if (channel == null || !channel.id().asLongText().equals(channelId)) {
                    continue;
                }
                ChannelPipeline p = channel.pipeline();
                ChannelHandlerContext decoder = p.context(ModelResponseDecoder.class);
                if (decoder == null) {
                    return false;
                }
                if (p.get(NAME) == null) {
                    p.addAfter(decoder.name(), NAME, new EarlyAnswers(answer));
                }
                return true;
            }
        } catch (java.util.ConcurrentModificationException e) {
            return false; // the load is still adding its threads: the next request tries again
        } catch (ReflectiveOperationException | RuntimeException e) {
            logger.warn("invokes are answered by MMS's worker thread: {}", e.toString());
        }
        return false;
    }

    private static Channel backendChannel(WorkerThread thread) throws ReflectiveOperationException {
        Field f = WorkerThread.class.getDeclaredField("backendChannel");
        f.setAccessible(true);
        return (Channel) f.get(thread);
    }
}
