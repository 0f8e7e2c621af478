package com.mme.mms;

import io.netty.channel.ChannelDuplexHandler;
import io.netty.channel.ChannelHandlerContext;
import io.netty.channel.ChannelPromise;
import io.netty.handler.codec.http.HttpRequest;
import io.netty.handler.codec.http.HttpResponse;
import io.netty.handler.codec.http.LastHttpContent;
import io.netty.util.ReferenceCountUtil;
import java.util.ArrayDeque;
import java.util.concurrent.atomic.AtomicLong;

/**
 * Answers a connection's requests in the order they came (RFC 9112 section 9.3.2). MMS handles each request
 * as soon as it is read and writes each answer when it is ready, so with HTTP/1.1 pipelining a /ping
 * sent behind a slow invoke was answered first and the client paired answers with the wrong requests.
 * Here, between Netty's HTTP decoder and MMS's aggregator, a request is passed on only once the answer
 * to the one before it has been completely written; later ones wait here (and the socket is not read
 * meanwhile). Everything MMS, the aggregator (413, 100 Continue) or our plugin writes passes through.
 * Netty calls every method on the connection's event loop: no locks.
 */
final class InOrderAnswers extends ChannelDuplexHandler {

    static final String NAME = "mme-in-order";
    /** Requests that waited here for the answer to an earlier one (GET /mme). */
    static final AtomicLong HELD = new AtomicLong();

    private final ArrayDeque<Object> waiting = new ArrayDeque<>();
    /** A request was passed on and its final answer is not completely written yet. */
    private boolean answering;
    /** The final answer under way is streamed: it ends with its LastHttpContent. */
    private boolean streaming;
    private boolean paused;

    @Override
    public void channelRead(ChannelHandlerContext ctx, Object msg) {
        boolean request = msg instanceof HttpRequest;
        if (waiting.isEmpty() && !(request && answering)) {
            answering |= request;
            ctx.fireChannelRead(msg);
            return;
        }
        if (request) {
            HELD.incrementAndGet();
        }
        waiting.add(msg); // a later request, or the rest of one that waits
        if (!paused) {
            paused = true;
            ctx.channel().config().setAutoRead(false);
        }
    }

    @Override
    public void write(ChannelHandlerContext ctx, Object msg, ChannelPromise promise) {
        if (endsAnswer(msg)) {
            ChannelPromise p = promise.unvoid();
            // Written (or failed: the connection is going anyway). Run as a task, not inside this
            // write, so a run of pipelined requests answered at once does not recurse.
            p.addListener(f -> ctx.executor().execute(() -> next(ctx)));
            ctx.write(msg, p);
            return;
        }
        ctx.write(msg, promise);
    }

    private boolean endsAnswer(Object msg) {
        if (msg instanceof HttpResponse) {
            if (((HttpResponse) msg).status().code() < 200) {
                return false; // 100 Continue is not the answer
            }
            streaming = !(msg instanceof LastHttpContent);
            return !streaming;
        }
        if (streaming && msg instanceof LastHttpContent) {
            streaming = false;
            return true;
        }
        return false;
    }

    /** The answer is out: pass on the next request (and whatever of it has arrived). */
    private void next(ChannelHandlerContext ctx) {
        answering = false;
        boolean passed = false;
        while (!waiting.isEmpty()) {
            Object msg = waiting.peek();
            if (msg instanceof HttpRequest) {
                if (answering) {
                    break;
                }
                answering = true;
            }
            waiting.poll();
            passed = true;
            ctx.fireChannelRead(msg);
        }
        if (passed) {
            ctx.fireChannelReadComplete();
        }
        if (waiting.isEmpty() && paused) {
            paused = false;
            ctx.channel().config().setAutoRead(true);
        }
    }

    @Override
    public void channelInactive(ChannelHandlerContext ctx) {
        drop();
        ctx.fireChannelInactive();
    }

    @Override
    public void handlerRemoved(ChannelHandlerContext ctx) {
        drop();
    }

    private void drop() {
        while (!waiting.isEmpty()) {
            ReferenceCountUtil.release(waiting.poll());
        }
    }
}
