"""config.py is the one source of truth: the YAML, the launch files and setup.py agree with it."""
import re
import sys
from pathlib import Path

from fmdrive import config
from fmdrive.graph import GRAPH, node_command, params_yaml_text

ROOT = Path(__file__).resolve().parent.parent


def test_params_yaml_is_generated_from_config():
    assert (ROOT / 'config' / 'params.yaml').read_text() == params_yaml_text(), \
        'config/params.yaml is stale: run `fmdrive params > config/params.yaml`'


def test_every_topic_has_a_message_type():
    assert set(config.TOPICS.values()) <= set(config.TOPIC_TYPES)


def test_every_graph_node_has_an_entry_point_and_parameters():
    setup_py = (ROOT / 'setup.py').read_text()
    for node in GRAPH:
        assert f"'{node.executable} = fmdrive.nodes.start:{node.name}'" in setup_py, node
        assert node.name in config.NODE_PARAMS


def test_launch_files_start_the_graph_from_graph_py():
    for name in ('fmdrive.launch.py', 'replay.launch.py'):
        text = (ROOT / 'launch' / name).read_text()
        assert 'from fmdrive.graph import GRAPH' in text and 'for n in GRAPH' in text


def test_node_command_passes_params_and_sim_time():
    cmd = node_command(GRAPH[0], '/x/params.yaml', use_sim_time=True)
    assert cmd[-2:] == ['-p', 'use_sim_time:=true'] and '--params-file' in cmd


def test_node_command_remaps_topics_for_every_node_before_its_parameters():
    remaps = {'/velodyne_points': config.TOPICS['points'], '/odom': config.TOPICS['odometry']}
    for node in GRAPH:
        cmd = node_command(node, None, overrides={'queue_size': 3}, remaps=remaps)
        args = cmd[cmd.index('--ros-args') + 1:]
        pairs = [args[i + 1] for i in range(len(args) - 1) if args[i] == '-r']
        assert pairs == [f'__node:={node.name}', f'/velodyne_points:={config.TOPICS["points"]}',
                         f'/odom:={config.TOPICS["odometry"]}']
        assert args[-4:] == ['-p', 'use_sim_time:=false', '-p', 'queue_size:=3']


def test_launch_files_respawn_with_the_policy_of_graph_py():
    for name in ('fmdrive.launch.py', 'replay.launch.py'):
        text = (ROOT / 'launch' / name).read_text()
        assert 'respawn=True' in text and 'respawn_delay=RESPAWN_DELAY_S' in text, name
        # ...and load our Fast DDS profile through the variable the distribution's Fast DDS reads
        assert "launch_profile_env(os.path.join(share, 'config', 'fastdds_large_messages.xml'))" in text, name


def test_drawing_runs_niced_and_the_driving_path_does_not():
    nice = {n.name: n.nice for n in GRAPH}
    assert nice['visualizer'] > 0
    assert all(nice[n] == 0 for n in ('lidar_encoder', 'fusion', 'planner'))
    for name in ('fmdrive.launch.py', 'replay.launch.py'):
        assert "prefix=f'nice -n {n.nice}' if n.nice else None" in (ROOT / 'launch' / name).read_text(), name


def test_rviz_config_shows_the_output_topics():
    rviz = (ROOT / 'config' / 'fmdrive.rviz').read_text()
    for key in ('markers', 'overlay', 'trajectory', 'points'):
        assert config.TOPICS[key] in rviz


def test_interface_package_defines_every_fmdrive_message_type_used():
    msg_dir = ROOT / 'ros2_ws' / 'src' / 'fmdrive_msgs' / 'msg'
    for msgtype in config.TOPIC_TYPES.values():
        if msgtype.startswith('fmdrive_msgs/'):
            assert (msg_dir / (msgtype.split('/')[-1] + '.msg')).exists(), msgtype


def test_graph_lists_exactly_the_inputs_each_node_subscribes_to():
    for node in GRAPH:
        source = (ROOT / (node.module.replace('.', '/') + '.py')).read_text()
        assert set(re.findall(r"self\.subscribe\('(\w+)'", source)) == set(node.inputs), node.name


def test_graph_says_which_nodes_keep_a_tf_buffer_and_the_replay_waits_for_their_tf_static_reader():
    from fmdrive.pipeline_run import WAIT_KEYS, expected_subscribers
    for node in GRAPH:
        source = (ROOT / (node.module.replace('.', '/') + '.py')).read_text()
        assert ('self.use_tf()' in source) == node.uses_tf, node.name
    wanted = expected_subscribers(GRAPH, WAIT_KEYS)
    assert sorted(wanted[config.TOPICS['tf_static']]) == sorted(n.name for n in GRAPH if n.uses_tf)
    assert 'lidar_encoder' in wanted[config.TOPICS['tf_static']]


def test_graph_lists_exactly_the_outputs_each_node_publishes():
    for node in GRAPH:
        source = (ROOT / (node.module.replace('.', '/') + '.py')).read_text()
        published = re.findall(r"self\.advertise\('(\w+)'", source) + re.findall(
            r"create_publisher\(\s*\w+,\s*config\.TOPICS\['(\w+)'\]", source)
        assert set(published) == set(node.outputs), node.name


def test_internal_topics_are_the_ones_a_node_publishes_and_another_reads():
    from fmdrive.graph import INTERNAL_TOPICS
    assert set(INTERNAL_TOPICS) == {config.TOPICS[k] for k in ('camera_objects', 'lidar_objects', 'lanes', 'objects',
                                                                          'scene', 'plan')}


def test_launch_files_point_fast_dds_at_our_profile_through_the_distributions_variable(monkeypatch):
    """launch/launch_ros are not installable here: the launch files run against stand-ins that keep
    the actions they build, on a Humble (Fast DDS 2) and a Kilted (Fast DDS 3) environment."""
    import importlib.util
    import types

    class Action:
        def __init__(self, *args, **kwargs):
            self.args, self.kwargs = args, kwargs
    names = {'launch': ['LaunchDescription'],
             'launch.actions': ['DeclareLaunchArgument', 'ExecuteProcess', 'SetEnvironmentVariable'],
             'launch.conditions': ['IfCondition'], 'launch.substitutions': ['LaunchConfiguration'],
             'launch_ros.actions': ['Node'], 'ament_index_python': [], 'ament_index_python.packages': []}
    for module, classes in names.items():
        stub = types.ModuleType(module)
        for c in classes:
            setattr(stub, c, type(c, (Action,), {}))
        monkeypatch.setitem(sys.modules, module, stub)
    # the share directory is the repository (the launch file reads calibration/extrinsics.yaml from it)
    sys.modules['ament_index_python.packages'].get_package_share_directory = lambda package: str(ROOT)
    for var in ('FASTDDS_DEFAULT_PROFILES_FILE', 'FASTRTPS_DEFAULT_PROFILES_FILE'):
        monkeypatch.delenv(var, raising=False)
    for name in ('fmdrive.launch.py', 'replay.launch.py'):
        for distro, var in (('humble', 'FASTRTPS_DEFAULT_PROFILES_FILE'), ('kilted', 'FASTDDS_DEFAULT_PROFILES_FILE')):
            monkeypatch.setenv('ROS_DISTRO', distro)
            spec = importlib.util.spec_from_file_location('launch_file', ROOT / 'launch' / name)
            module = importlib.util.module_from_spec(spec)
            spec.loader.exec_module(module)
            actions = module.generate_launch_description().args[0]
            env = [a.args for a in actions if type(a).__name__ == 'SetEnvironmentVariable']
            assert env == [(var, str(ROOT / 'config' / 'fastdds_large_messages.xml'))], (name, distro, env)
        monkeypatch.setenv('FASTRTPS_DEFAULT_PROFILES_FILE', '/opt/theirs.xml')     # the user's own wins
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        assert not [a for a in module.generate_launch_description().args[0]
                    if type(a).__name__ == 'SetEnvironmentVariable']
        monkeypatch.delenv('FASTRTPS_DEFAULT_PROFILES_FILE')
