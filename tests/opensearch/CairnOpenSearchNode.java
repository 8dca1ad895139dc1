// One OpenSearch node for cairn's tests, started the way OpenSearch's own
// integration tests start theirs (org.opensearch.node.MockNode): a Node
// built with its plugins given as classes on the classpath rather than
// installed under plugins/ or modules/. No test framework, no mocks: the
// real netty4 transport and HTTP server, real data and snapshot paths.
//
//   java -cp 'CACHE/VERSION/*' CairnOpenSearchNode HOME [PLUGIN_CLASS...]
//
// HOME/config/opensearch.yml holds the node's settings (path.data,
// path.repo, ports, discovery: tests/integration/servers_opensearch.py
// writes it, with a log4j2.properties); logs go to stdout. SIGTERM closes the node cleanly; the tests
// mostly SIGKILL it. Compiled into the cache by scripts/fetch-opensearch.sh.
import java.nio.file.Path;
import java.nio.file.Paths;
import java.util.ArrayList;
import java.util.Collection;
import java.util.Collections;
import java.util.concurrent.CountDownLatch;
import java.util.concurrent.TimeUnit;

import org.opensearch.common.logging.LogConfigurator;
import org.opensearch.common.settings.Settings;
import org.opensearch.env.Environment;
import org.opensearch.node.InternalSettingsPreparer;
import org.opensearch.node.Node;
import org.opensearch.plugins.Plugin;

public final class CairnOpenSearchNode extends Node {
    private CairnOpenSearchNode(Environment env, Collection<Class<? extends Plugin>> plugins) {
        super(env, plugins, true);
    }

    public static void main(String[] args) throws Exception {
        if (args.length < 1) {
            System.err.println("usage: CairnOpenSearchNode HOME [PLUGIN_CLASS...]");
            System.exit(2);
        }
        Path home = Paths.get(args[0]).toAbsolutePath();
        Settings base = Settings.builder().put("path.home", home.toString()).build();
        LogConfigurator.registerErrorListener();
        Environment env = InternalSettingsPreparer.prepareEnvironment(base, Collections.emptyMap(),
                home.resolve("config"), () -> "cairn-test-node");
        LogConfigurator.setNodeName(Node.NODE_NAME_SETTING.get(env.settings()));
        // HOME/config/log4j2.properties, as a distribution's node reads it
        // (the tests' logs to stdout at INFO); without one only errors.
        if (env.configFile().resolve("log4j2.properties").toFile().exists()) {
            LogConfigurator.configure(env);
        } else {
            LogConfigurator.configureWithoutConfig(env.settings());
        }

        Collection<Class<? extends Plugin>> plugins = new ArrayList<>();
        for (int i = 1; i < args.length; i++) {
            plugins.add(Class.forName(args[i]).asSubclass(Plugin.class));
        }
        Node node = new CairnOpenSearchNode(env, plugins);
        CountDownLatch done = new CountDownLatch(1);
        Runtime.getRuntime().addShutdownHook(new Thread(() -> {
            try {
                node.close();
                node.awaitClose(20, TimeUnit.SECONDS);
            } catch (Exception e) {
                e.printStackTrace();
            } finally {
                done.countDown();
            }
        }, "cairn-node-shutdown"));
        node.start();
        System.out.println("cairn: node started");
        done.await();  // the node's threads are daemons: keep the JVM alive, as Bootstrap does
    }
}
