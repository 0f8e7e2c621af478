package com.mme.mms;

import io.netty.channel.Channel;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.ServerChannel;
import io.netty.channel.SingleThreadEventLoop;
import io.netty.handler.codec.http.HttpObjectAggregator;
import java.lang.reflect.Field;
import java.util.ArrayList;
import java.util.Iterator;
import java.util.List;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Puts RequestGuard into every HTTP connection's pipeline. MMS keeps its server channels out of reach
 * (locals of ModelServer.main), so they are found through Netty's event-loop threads: each thread runs
 * a wrapper holding its event loop, whose registered channels include the listening ones. A hook on each
 * listening channel then adds the guard to every connection it accepts, once MMS's initializer ran.
 */
final class RequestGuardInstaller {

    private static final Logger logger = LoggerFactory.getLogger(RequestGuardInstaller.class);
    static volatile boolean installed;

    private RequestGuardInstaller() {}

    static void startInBackground() {
        Thread t = new Thread(RequestGuardInstaller::install, "mme-request-guard");
        t.setDaemon(true);
        t.start();
    }

    private static void install() {
        try {
            Field target = Thread.class.getDeclaredField("target");
            target.setAccessible(true);
            for (int attempt = 0; attempt < 12_000 && !installed; attempt++) {
                for (SingleThreadEventLoop loop : eventLoops(target)) {
                    loop.submit(() -> hookListeners(loop)).get();
                }
                if (!installed) {
                    Thread.sleep(10);
                }
            }
            logger.info(installed ? "request guard installed" : "no listening channel found: no request guard");
        } catch (InterruptedException e) {
            Thread.currentThread().interrupt();
        } catch (ReflectiveOperationException | RuntimeException | java.util.concurrent.ExecutionException e) {
            logger.error("request guard not installed", e);
        }
    }

    private static List<SingleThreadEventLoop> eventLoops(Field target) throws IllegalAccessException {
        List<SingleThreadEventLoop> loops = new ArrayList<>();
        for (Thread thread : Thread.getAllStackTraces().keySet()) {
            findLoop(target.get(thread), loops, 3);
        }
        return loops;
    }

    /** Netty wraps a loop's task (FastThreadLocalRunnable, ThreadExecutorMap): unwrap a few levels. */
    private static void findLoop(Object runnable, List<SingleThreadEventLoop> loops, int depth) {
        if (runnable == null || depth == 0 || !runnable.getClass().getName().startsWith("io.netty.")) {
            return;
        }
        for (Field f : runnable.getClass().getDeclaredFields()) {
            if (java.lang.reflect.Modifier.isStatic(f.getModifiers())) {
                continue;
            }
            try {
                f.setAccessible(true);
                Object v = f.get(runnable);
                if (v instanceof SingleThreadEventLoop) {
                    loops.add((SingleThreadEventLoop) v);
                } else if (v instanceof Runnable) {
                    findLoop(v, loops, depth - 1);
                }
            } catch (ReflectiveOperationException | RuntimeException e) {
                // not one of Netty's wrappers
            }
        }
    }

    /** On the loop's own thread: hook its listening channels, guard the connections already open. */
    private static void hookListeners(SingleThreadEventLoop loop) {
        for (Iterator<Channel> it = loop.registeredChannelsIterator(); it.hasNext(); ) {
            Channel ch = it.next();
            if (ch instanceof ServerChannel) {
                if (ch.pipeline().get(AcceptHook.class) == null) {
                    ch.pipeline().addFirst("mme-accept-hook", new AcceptHook());
                }
                installed = true;
            } else {
                guard(ch.pipeline());
            }
        }
    }

    static void guard(ChannelPipeline pipeline) {
        if (pipeline.get(RequestGuard.class) == null && pipeline.context(HttpObjectAggregator.class) != null) {
            // Behind the metrics handler and the idle closer, so that they see every request and answer,
            // the guard's own refusals and off-loop unloads included: aggregator, metrics, idle closer, guard.
            String aggregator = pipeline.context(HttpObjectAggregator.class).name();
            if (pipeline.get(InOrderAnswers.class) == null) {
                pipeline.addBefore(aggregator, InOrderAnswers.NAME, new InOrderAnswers());
            }
            String anchor = pipeline.get(ChannelHook.NAME) != null ? ChannelHook.NAME : aggregator;
            IdleCloser.install(pipeline, anchor);
            String before = pipeline.get(IdleCloser.NAME) != null ? IdleCloser.NAME : anchor;
            pipeline.addAfter(before, "mme-request-guard", RequestGuard.INSTANCE);
        }
    }

    /** On a listening channel: each accepted connection gets a ChildHook before MMS's initializer. */
    private static final class AcceptHook extends ChannelInboundHandlerAdapter {
        @Override
        public boolean isSharable() {
            return true;
        }

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            if (msg instanceof Channel) {
                Channel child = (Channel) msg;
                child.pipeline().addLast(ConnectionCap.admit(child) ? new ChildHook() : new Refuse());
            }
            ctx.fireChannelRead(msg);
        }

        @Override
        public void exceptionCaught(ChannelHandlerContext ctx, Throwable cause) {
            ConnectionCap.acceptFailed(cause); // then Netty's acceptor pauses accepting for 1 s
            ctx.fireExceptionCaught(cause);
        }
    }

    /** A connection refused by ConnectionCap: closed as soon as it is registered. */
    private static final class Refuse extends ChannelInboundHandlerAdapter {
        @Override
        public void channelActive(ChannelHandlerContext ctx) {
            ctx.close();
        }
    }

    /** Once registered (MMS's initializer has built the pipeline), adds the guard and leaves. */
    private static final class ChildHook extends ChannelInboundHandlerAdapter {
        @Override
        public void channelRegistered(ChannelHandlerContext ctx) {
            ctx.fireChannelRegistered();
            ChannelPipeline pipeline = ctx.pipeline();
            guard(pipeline);
            pipeline.remove(this);
        }
    }
}
