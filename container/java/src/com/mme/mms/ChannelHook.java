package com.mme.mms;

import io.netty.channel.Channel;
import io.netty.channel.ChannelHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelInboundHandlerAdapter;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.ServerChannel;
import io.netty.util.concurrent.EventExecutor;
import io.netty.util.concurrent.FastThreadLocalThread;
import java.lang.reflect.Field;
import java.nio.channels.SelectionKey;
import java.nio.channels.Selector;
import java.util.ArrayList;
import java.util.Collection;
import java.util.List;
import java.util.concurrent.TimeUnit;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Puts an InvokeMetricsHandler into every HTTP connection MMS accepts, right after MMS's own HTTP
 * aggregator, so every answer is seen with its status and latency, also those MMS or our plugin send
 * without a worker (404 unknown model, 503, 507).
 *
 * <p>MMS keeps its listening channel in a local variable of its main, and runs plugin endpoints on a
 * pool thread without the request's channel; the channel is found instead on the Netty event loops
 * (their threads carry their executor), once, when the server has bound. From then on a handler in front
 * of Netty's acceptor adds ours to each new connection. The fields read are Netty 4.1's, as bundled in
 * MMS 1.1.11; `serve` waits for GET /metrics to answer (it answers 503 until this is installed).
 */
final class ChannelHook {

    private static final Logger logger = LoggerFactory.getLogger(ChannelHook.class);
    private static final String AFTER = "aggregator"; // MMS's ServerInitializer names its handlers
    static final String NAME = "mme-metrics";
    private static volatile boolean installed;

    private ChannelHook() {}

    static boolean installed() {
        return installed;
    }

    /** Polls for MMS's listening channel until it is found (it binds shortly after plugins load). */
    static void start() {
        Thread t =
                new Thread(
                        () -> {
                            long deadline = System.currentTimeMillis() + 600_000;
                            while (!installed && System.currentTimeMillis() < deadline) {
                                try {
                                    installed = tryInstall();
                                    if (!installed) {
                                        Thread.sleep(5);
                                    }
                                } catch (InterruptedException e) {
                                    return;
                                } catch (ReflectiveOperationException | RuntimeException e) {
                                    logger.error("per-request metrics cannot be installed", e);
                                    return;
                                }
                            }
                            if (installed) {
                                logger.info("per-model request metrics installed");
                            }
                        },
                        "mme-metrics-hook");
        t.setDaemon(true);
        t.start();
    }

    private static boolean tryInstall() throws ReflectiveOperationException, InterruptedException {
        Field target = Thread.class.getDeclaredField("target");
        target.setAccessible(true); // serve opens java.base/java.lang to us
        boolean found = false;
        for (Thread thread : Thread.getAllStackTraces().keySet()) {
            if (!(thread instanceof FastThreadLocalThread)) {
                continue;
            }
            EventExecutor loop = executorOf(target.get(thread));
            if (loop == null) {
                continue;
            }
            List<Channel> servers;
            try {
                // The loop's own channel table is read on the loop's thread.
                servers = loop.submit(() -> serverChannelsOn(loop)).get(1, TimeUnit.SECONDS);
            } catch (java.util.concurrent.ExecutionException | java.util.concurrent.TimeoutException e) {
                continue;
            }
            for (Channel server : servers) {
                if (server.pipeline().get(Acceptor.class) == null) {
                    server.pipeline().addFirst("mme-metrics-acceptor", Acceptor.INSTANCE);
                }
                found = true;
            }
        }
        return found;
    }

    /**
     * The event executor a Netty thread runs: ThreadExecutorMap's wrapper keeps it in a field, inside
     * FastThreadLocalRunnable's wrapper.
     */
    private static EventExecutor executorOf(Object runnable) throws IllegalAccessException {
        for (int depth = 0; runnable != null && depth < 4; depth++) {
            Object inner = null;
            for (Field f : runnable.getClass().getDeclaredFields()) {
                if (EventExecutor.class.isAssignableFrom(f.getType())) {
                    f.setAccessible(true);
                    return (EventExecutor) f.get(runnable);
                }
                if (Runnable.class.isAssignableFrom(f.getType())) {
                    f.setAccessible(true);
                    inner = f.get(runnable);
                }
            }
            runnable = inner;
        }
        return null;
    }

    private static List<Channel> serverChannelsOn(EventExecutor loop) throws ReflectiveOperationException {
        List<Channel> out = new ArrayList<>();
        for (Object candidate : registered(loop)) {
            if (candidate instanceof ServerChannel) {
                out.add((Channel) candidate);
            }
        }
        return out;
    }

    /** Channels registered on an epoll loop (its channel table) or a NIO loop (its selector's keys). */
    private static Collection<?> registered(EventExecutor loop) throws ReflectiveOperationException {
        for (Class<?> c = loop.getClass(); c != null; c = c.getSuperclass()) {
            for (Field f : c.getDeclaredFields()) {
                if (f.getName().equals("channels")
                        && io.netty.util.collection.IntObjectMap.class.isAssignableFrom(f.getType())) {
                    f.setAccessible(true);
                    return new ArrayList<>(((io.netty.util.collection.IntObjectMap<?>) f.get(loop)).values());
                }
                if (f.getName().equals("unwrappedSelector") && Selector.class.isAssignableFrom(f.getType())) {
                    f.setAccessible(true);
                    List<Object> out = new ArrayList<>();
                    for (SelectionKey key : ((Selector) f.get(loop)).keys()) {
                        out.add(key.attachment());
                    }
                    return out;
                }
            }
        }
        return List.of();
    }

    /** In front of Netty's acceptor: a new connection gets an Installer before MMS's initializer. */
    @ChannelHandler.Sharable
    static final class Acceptor extends ChannelInboundHandlerAdapter {
        static final Acceptor INSTANCE = new Acceptor();

        @Override
        public void channelRead(ChannelHandlerContext ctx, Object msg) {
            if (msg instanceof Channel) {
                ((Channel) msg).pipeline().addLast(Installer.INSTANCE);
            }
            ctx.fireChannelRead(msg);
        }
    }

    /** Runs once MMS's initializer has built the connection's pipeline: puts ours after the aggregator. */
    @ChannelHandler.Sharable
    static final class Installer extends ChannelInboundHandlerAdapter {
        static final Installer INSTANCE = new Installer();

        @Override
        public void channelRegistered(ChannelHandlerContext ctx) {
            ChannelPipeline p = ctx.pipeline();
            p.remove(this);
            if (p.get(NAME) == null) {
                if (p.get(AFTER) != null) {
                    p.addAfter(AFTER, NAME, new InvokeMetricsHandler());
                } else {
                    p.addLast(NAME, new InvokeMetricsHandler());
                }
            }
            ctx.fireChannelRegistered();
        }
    }
}
