package com.mme.mms;

import com.sun.management.UnixOperatingSystemMXBean;
import io.netty.channel.Channel;
import io.netty.util.AttributeKey;
import java.io.IOException;
import java.lang.management.ManagementFactory;
import java.lang.management.OperatingSystemMXBean;
import java.util.Map;
import java.util.concurrent.ConcurrentHashMap;
import java.util.concurrent.atomic.AtomicLong;
import org.slf4j.Logger;
import org.slf4j.LoggerFactory;

/**
 * Keeps a descriptor free for the next connection (a /ping above all). Idle connections are closed
 * after MME_IDLE_CONNECTION_TIMEOUT_SECONDS, but within that window enough of them took every
 * descriptor Java has: MMS could not accept, and /ping timed out. Here the client connections are
 * counted as they are accepted; past MME_MAX_CONNECTIONS (unset: half of Java's descriptor limit, the
 * other half left to models' sockets and pipes) the longest-idle one is closed for each new one, and a
 * new one is refused only when every open connection has a request under way. If accepting fails for
 * want of descriptors all the same (models took them), the longest-idle connections are closed too.
 */
final class ConnectionCap {

    private static final Logger logger = LoggerFactory.getLogger(ConnectionCap.class);
    private static final int CONFIGURED = ContainerMetrics.intEnv("_MME_MAX_CONNECTIONS", 0);
    private static final int MIN_LIMIT = 16;
    /** Connections closed to make room when accepting failed for want of descriptors. */
    private static final int FREED_ON_EMFILE = 16;
    static final AtomicLong CLOSED_IDLE = new AtomicLong();
    static final AtomicLong REFUSED = new AtomicLong();
    /** Open client connections, with their IdleCloser once MMS's pipeline is built (PENDING before). */
    private static final Map<Channel, IdleCloser> OPEN = new ConcurrentHashMap<>();
    private static final IdleCloser PENDING = new IdleCloser();
    /** When a connection was accepted: idle since then until its first answer (IdleCloser). */
    static final AttributeKey<Long> ACCEPTED_AT = AttributeKey.valueOf("mme-accepted-at");
    private static final OperatingSystemMXBean OS = ManagementFactory.getOperatingSystemMXBean();

    private ConnectionCap() {}

    /** The cap now: configured, or half of the descriptor limit (read each time: it can be changed). */
    static int limit() {
        if (CONFIGURED > 0) {
            return CONFIGURED;
        }
        if (OS instanceof UnixOperatingSystemMXBean) {
            long max = ((UnixOperatingSystemMXBean) OS).getMaxFileDescriptorCount();
            return (int) Math.max(MIN_LIMIT, Math.min(Integer.MAX_VALUE, max / 2));
        }
        return Integer.MAX_VALUE;
    }

    static int open() {
        return OPEN.size();
    }

    /**
     * On the listening channel's loop, for each accepted connection: counts it and makes room. False
     * when it was refused (closed at once: every open connection is busy).
     */
    static boolean admit(Channel child) {
        child.attr(ACCEPTED_AT).set(System.nanoTime());
        OPEN.put(child, PENDING);
        child.closeFuture().addListener(f -> OPEN.remove(child));
        int excess = OPEN.size() - limit();
        for (int i = 0; i < excess; i++) {
            int made = closeLongestIdle();
            if (made == NO_ROOM) {
                REFUSED.incrementAndGet();
                OPEN.remove(child);
                return false;
            }
            if (made == NOT_YET) {
                break; // the others are still being set up: over the cap for a moment, not refused
            }
        }
        return true;
    }

    /** IdleCloser of a connection, once MMS's pipeline is built: from then on it may be chosen. */
    static void track(Channel channel, IdleCloser closer) {
        OPEN.replace(channel, PENDING, closer);
    }

    /** On the listening channel: accepting failed. Out of descriptors: make room for the next try. */
    static void acceptFailed(Throwable cause) {
        if (cause instanceof IOException && String.valueOf(cause.getMessage()).contains("open files")) {
            int freed = 0;
            while (freed < FREED_ON_EMFILE && closeLongestIdle() == CLOSED) {
                freed++;
            }
            logger.warn("out of descriptors with {} client connections: closed {} idle ones", OPEN.size(), freed);
        }
    }

    private static final int CLOSED = 1;
    private static final int NOT_YET = 0;
    private static final int NO_ROOM = -1;

    /**
     * Closes the connection idle the longest (no request under way): CLOSED; NOT_YET when none is idle
     * but some are still being set up; NO_ROOM when every one has a request under way.
     */
    private static int closeLongestIdle() {
        IdleCloser oldest = null;
        boolean pending = false;
        for (IdleCloser c : OPEN.values()) {
            pending |= c == PENDING;
            if (c != PENDING && c.closable() && (oldest == null || c.idleSince() < oldest.idleSince())) {
                oldest = c;
            }
        }
        if (oldest == null) {
            return pending ? NOT_YET : NO_ROOM;
        }
        IdleCloser victim = oldest;
        Channel channel = victim.channel();
        OPEN.remove(channel); // counted out now: the close itself runs on its own loop
        victim.closeIfIdle(() -> OPEN.putIfAbsent(channel, victim));
        CLOSED_IDLE.incrementAndGet();
        return CLOSED;
    }
}
