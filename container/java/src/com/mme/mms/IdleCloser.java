package com.mme.mms;

import io.netty.channel.Channel;
import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPipeline;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.FullHttpRequest;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.timeout.IdleStateEvent;
import io.netty.handler.timeout.IdleStateHandler;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Closes a client connection idle for MME_IDLE_CONNECTION_TIMEOUT_SECONDS with no request under way.
 * MMS 1.1.11 kept idle connections forever: ~20,000 of them exhausted Java's descriptors and /ping
 * timed out. A connection waiting for a slow answer is not idle: requests read minus answers written
 * (one per connection, on its event loop) must be zero. ConnectionCap reads the same bookkeeping, from
 * the listening channel's loop, to close the longest-idle connection when there are too many.
 */
final class IdleCloser extends ChannelDuplexHandler {

    static final String NAME = "mme-idle-closer";
    static final int TIMEOUT_S = ContainerMetrics.intEnv("_MME_IDLE_CONNECTION_TIMEOUT_S", 60);
    static final AtomicLong CLOSED = new AtomicLong();
    // Written on the connection's loop only; volatile for ConnectionCap's reads from another loop.
    private volatile int inFlight;
    private volatile long idleSince = System.nanoTime();
    private volatile boolean closing;
    private ChannelHandlerContext ctx;

    /** After MMS's aggregator (as RequestGuard): Netty's idle timer at the head, the closer here. */
    static void install(ChannelPipeline pipeline, String afterName) {
        if (TIMEOUT_S <= 0 || pipeline.get(IdleCloser.class) != null) {
            return;
        }
        pipeline.addFirst("mme-idle-timer", new IdleStateHandler(0, 0, TIMEOUT_S));
        pipeline.addAfter(afterName, NAME, new IdleCloser());
    }

    @Override
    public void handlerAdded(ChannelHandlerContext ctx) {
        this.ctx = ctx;
        Long accepted = ctx.channel().attr(ConnectionCap.ACCEPTED_AT).get();
        if (accepted != null) {
            idleSince = accepted; // its loop may set it up later than a connection accepted after it
        }
        ConnectionCap.track(ctx.channel(), this);
    }

    boolean closable() {
        return !closing && inFlight == 0 && ctx != null;
    }

    long idleSince() {
        return idleSince;
    }

    Channel channel() {
        return ctx.channel();
    }

    /**
     * From another thread: closes the connection on its loop, unless a request came meanwhile (then
     * kept runs there, and it stays open).
     */
    void closeIfIdle(Runnable kept) {
        closing = true;
        ctx.executor().execute(() -> {
            if (inFlight == 0) {
                ctx.close();
            } else {
                closing = false;
                if (ctx.channel().isActive()) {
                    kept.run();
                }
            }
        });
    }

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        if (msg instanceof FullHttpRequest) {
            inFlight++;
        }
        ctx.fireChannelRead(msg);
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise) {
        if (msg instanceof HttpResponse && ((HttpResponse) msg).status().code() >= 200 && inFlight > 0) {
            inFlight--;
            idleSince = System.nanoTime();
        }
        ctx.write(msg, promise);
    }

    @Override
    public void userEventTriggered(ChannelHandlerContext ctx, Object evt) {
        if (evt instanceof IdleStateEvent) {
            if (inFlight == 0) {
                CLOSED.incrementAndGet();
                ctx.close();
            }
            return;
        }
        ctx.fireUserEventTriggered(evt);
    }
}
